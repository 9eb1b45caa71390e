"""The ablation runner: both models trained on one dataset, three rows evaluated, the table written;
a rerun redoes nothing."""

import json
import os

from helpers import one_device_mesh
from configs import tiny
from edn_jax import ablation


def run_ablation(config, workdir):
    # One device: sharding is tested elsewhere, and 8 fake devices on 2 cores compile slowly.
    ablation.run_ablation(config, workdir, mesh=one_device_mesh())


def test_ablation_trains_evaluates_and_resumes(tmp_path, capsys):
    config = tiny.get_config()
    config.mode = "ablation"
    config.train.stages = "global,face"
    config.train.evaluate_holdout = False
    config.evaluate.pose_distance = False  # the detector is tested in test_evaluate.py
    config.evaluate.max_frames = 4
    config.train.face.d_alone_steps = 0  # one face step program to compile; the D-alone phase: test_face_stage.py
    workdir = str(tmp_path)
    run_ablation(config, workdir)
    out = capsys.readouterr().out
    table = open(os.path.join(workdir, "ablation.md")).read()
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == \
        ["pix2pixHD", "+T.S.", "+T.S.+Face", "mean training frame", "nearest training frame by pose"]
    results = json.load(open(os.path.join(workdir, "ablation.json")))
    # One dataset for both models; the rows are the stages they name, of the models they name.
    assert len({r["dataset"] for r in results.values()}) == 1
    assert [(r["model_workdir"].rsplit("/", 1)[1], r["stage"]) for r in results.values()] == \
        [("pix2pixhd", "global"), ("temporal", "global"), ("temporal", "face")]
    assert json.load(open(os.path.join(workdir, "pix2pixhd", "train_summary.json")))["stages"][0]["stage"] == "global"
    p2p, ts = (json.load(open(os.path.join(workdir, run, "train_summary.json"))) for run in ("pix2pixhd", "temporal"))
    assert [s["stage"] for s in ts["stages"]] == ["global", "face"] and len(p2p["stages"]) == 1
    # Different models give different scores; +T.S.+Face differs from +T.S. only by the face residual.
    g = {row: r["generated"] for row, r in results.items()}
    assert g["pix2pixHD"]["body_ssim"] != g["+T.S."]["body_ssim"]
    assert g["+T.S.+Face"]["face_lpips"] != g["+T.S."]["face_lpips"]
    assert "ablation table written to" in out

    run_ablation(config, workdir)
    again = capsys.readouterr().out
    assert again.count("already evaluated") == 3 and again.count("skipped") == 3
    assert open(os.path.join(workdir, "ablation.md")).read() == table
