"""Workdirs in an object store: every output under the URL, nothing on the local disk outside a
temporary directory, atomic outputs without rename, and an unreachable bucket as one error line.

TensorFlow's in-memory ``ram://`` filesystem stands in for ``gs://`` (the same ``tf.io.gfile`` calls,
no network). Two components cannot use it and are checked apart: Orbax writes arrays through
TensorStore, which knows ``gs://`` but not ``ram://``, and TFDS writes ArrayRecord files through
their own C++ filesystem; the end-to-end test keeps checkpoints and the dataset in a local
temporary directory, and the tests after it check that a ``gs://`` workdir reaches Orbax and TFDS
as the URL itself.
"""

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf
from etils.epath import backend as epath_backend
from etils.epath import gpath
from etils.epath import register as epath_register

from helpers import REPO, assert_facts, tiny_config
from edn_jax import command_line, main
from edn_jax.data import build
from edn_jax.errors import EdnError
from edn_jax.models import checkpoints
from edn_jax.runtime import fileio, storage, video
from edn_jax.training import generator_stage

gfile = tf.io.gfile


def remote_files(root: str) -> set[str]:
    """Every file under a URL, relative to it."""
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in gfile.walk(root) for f in files}


def local_entries(directory) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def ram(tmp_path, monkeypatch):
    """A fresh ram:// bucket; local temporary files go to tmp_path/tmp, the working directory is an
    empty tmp_path/cwd, and checkpoints of a ram:// workdir to tmp_path/orbax (see the docstring)."""
    bucket = f"ram://edn-test-{time.monotonic_ns()}"
    scratch, cwd, orbax = tmp_path / "tmp", tmp_path / "cwd", tmp_path / "orbax"
    for d in (scratch, cwd, orbax):
        d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(cwd)
    # clu opens its log directory through etils.epath, which routes gs:// to tf.io.gfile; taught the
    # same for ram:// here, so TensorBoard's files take the path they take on a bucket.
    monkeypatch.setattr(gpath, "_URI_PREFIXES", (*gpath._URI_PREFIXES, "ram://"))
    monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
    monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", epath_backend.tf_backend)
    monkeypatch.setitem(epath_register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)
    real_root = checkpoints.checkpoint_root
    monkeypatch.setattr(checkpoints, "checkpoint_root", lambda w: str(orbax / w.split("://", 1)[1] / "checkpoints") if
                        storage.is_remote(w) else real_root(w))
    yield bucket, tmp_path
    with contextlib.suppress(tf.errors.NotFoundError):  # ram:// lists only what makedirs made
        gfile.rmtree(bucket)


def test_atomic_outputs_on_an_object_store(ram):
    bucket, tmp_path = ram
    path = f"{bucket}/out/result.json"
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert not gfile.exists(path)
    with fileio.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("whole")
        assert not gfile.exists(path)  # nothing at the URL until the file is complete
    assert gfile.GFile(path).read() == "whole"
    assert local_entries(tmp_path / "tmp") == []  # the local temporary file is gone

    # A set of outputs: staged locally, uploaded beside a marker, then moved; an interrupted
    # commit (marker written, not all moved) is finished by the next run's recover().
    outputs = {"a": ("a.txt", "file"), "d": ("frames", "dir")}
    staged = fileio.StagedOutputs(f"{bucket}/set", "set", outputs, overwrite=False)
    staged.recover()
    staged.check("test")
    staged.start()
    open(staged.path("a"), "w").write("A")
    os.makedirs(staged.path("d"))
    open(os.path.join(staged.path("d"), "0.txt"), "w").write("zero")
    assert not staged.path("a").startswith("ram://")
    assert remote_files(f"{bucket}/set") == set()
    original_move = storage.move
    calls = []

    def move_once(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first output was moved
        original_move(src, dst)

    storage.move = move_once
    try:
        with pytest.raises(KeyboardInterrupt):
            staged.commit()
    finally:
        storage.move = original_move
    assert gfile.exists(f"{bucket}/set/.set.partial/{fileio.COMMIT_MARKER}")
    fileio.StagedOutputs(f"{bucket}/set", "set", outputs, overwrite=False).recover()
    assert remote_files(f"{bucket}/set") == {"a.txt", "frames/0.txt"}
    assert gfile.GFile(f"{bucket}/set/frames/0.txt").read() == "zero"
    with pytest.raises(EdnError, match="already holds test outputs"):
        fileio.StagedOutputs(f"{bucket}/set", "set", outputs, overwrite=False).check("test")

    # Without the marker the staged files are an interrupted run's: removed, the outputs kept.
    gfile.makedirs(f"{bucket}/set/.set.partial")
    gfile.GFile(f"{bucket}/set/.set.partial/a.txt", "w").write("half")
    fileio.StagedOutputs(f"{bucket}/set", "set", outputs, overwrite=True).recover()
    assert remote_files(f"{bucket}/set") == {"a.txt", "frames/0.txt"}
    assert gfile.GFile(f"{bucket}/set/a.txt").read() == "A"


def _preempt_at(monkeypatch, at_step: int):
    """SIGTERM to this process while the step that ends at ``at_step`` runs (a spot VM's notice)."""
    real_step = generator_stage.GeneratorTrainer.step

    def step(self, state, batch, *args):
        if int(state.step) + 1 == at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, state, batch, *args)

    monkeypatch.setattr(generator_stage.GeneratorTrainer, "step", step)


@pytest.mark.slow
def test_train_evaluate_pose_and_transfer_with_every_workdir_at_a_url(ram, monkeypatch, capsys):
    bucket, tmp_path = ram
    repo_before = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True,
                                 text=True).stdout
    config = tiny_config(num_steps=4, checkpoint_every=2, sample_every=2, log_every=1, evaluate_holdout=False)
    builder = build.make_builder(config, str(tmp_path / "data"), size=(32, 32))
    builder.download_and_prepare()
    config.data.dataset_dir = str(builder.data_dir)
    temporary_before = local_entries(tmp_path / "tmp")  # TFDS keeps a directory of its own there

    # Pose mode: keypoints, JSON, stick figure and overlay videos under the URL, all at once.
    pose = copy.deepcopy(config)
    pose.mode = "pose"
    pose.synthetic.num_frames = 12
    main.run(pose, f"{bucket}/pose")
    assert {"keypoints.npz", "stick.mp4", "overlay.mp4", "pose_summary.json", "openpose_json/frame_000000000011_keypoints.json"
            } <= remote_files(f"{bucket}/pose")
    assert not any(name.startswith(".pose_outputs") for name in gfile.listdir(f"{bucket}/pose"))

    # Training, preempted at step 3 (SIGTERM saves a checkpoint), then resumed by the same call.
    run = f"{bucket}/run"
    config.mode = "train"
    with monkeypatch.context() as patch:
        _preempt_at(patch, 3)
        main.run(config, run)
    assert "SIGTERM: saved a checkpoint at step 3" in capsys.readouterr().out
    main.run(config, run)
    out = capsys.readouterr().out
    assert "resuming from the checkpoint" in out and f"summary      {run}/train_summary.json" in out
    files = remote_files(run)
    assert {"train_summary.json", "samples/global/step_00000002.png", "samples/global/step_00000004.png"} <= files
    assert any(f.startswith("tensorboard/global/events.out.tfevents") for f in files)
    summary = json.loads(gfile.GFile(f"{run}/train_summary.json").read())
    assert summary["step"] == 4 and summary["dataset"] == str(builder.data_dir)
    assert sorted(os.listdir(tmp_path / "orbax" / run.split("://")[1] / "checkpoints" / "global")) == ["2", "3", "4"]

    # Evaluate mode: scores, samples and the side-by-side video under its own URL.
    evaluation = copy.deepcopy(config)
    evaluation.mode = "evaluate"
    evaluation.evaluate.model_workdir = run
    evaluation.evaluate.pose_distance = False
    main.run(evaluation, f"{bucket}/eval")
    files = remote_files(f"{bucket}/eval")
    assert {"evaluation/global/metrics.json", "evaluation/global/per_frame.csv", "evaluation/global/samples.png",
            "evaluation/global/side_by_side.mp4"} <= files
    metrics = json.loads(gfile.GFile(f"{bucket}/eval/evaluation/global/metrics.json").read())
    assert metrics["model_workdir"] == run and 0.0 < metrics["generated"]["ssim"] < 1.0

    # Transfer mode: the keypoint file pose mode wrote at the URL, rendered in chunks (segments
    # and resume state at the URL too), the videos uploaded when complete.
    transfer = copy.deepcopy(config)
    transfer.mode = "transfer"
    transfer.transfer.model_workdir = run
    transfer.transfer.source = f"{bucket}/pose/keypoints.npz"
    transfer.transfer.self_score, transfer.transfer.side_by_side, transfer.transfer.chunk_frames = False, True, 4
    real_write = video.SegmentedVideoWriter.write_chunk
    written = []

    def write_then_stop(self, frames):  # interrupted while encoding the second chunk (after 3 segments)
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(len(frames))
        real_write(self, frames)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(video.SegmentedVideoWriter, "write_chunk", write_then_stop)
        main.run(transfer, f"{bucket}/transfer")
    partial = f"{bucket}/transfer/.transfer_partial/pose"
    kept = remote_files(partial)  # the first chunk's segments and carry, and the third segment (not recorded)
    assert {n for n in kept if not n.endswith(".npz")} == {"state.json", "video/000000.mp4", "video/000001.mp4",
                                                           "side_by_side/000000.mp4"}
    assert "carry_000000004.npz" in kept and remote_files(f"{bucket}/transfer") == {
        f".transfer_partial/pose/{n}" for n in kept}  # no output yet
    assert json.loads(gfile.GFile(f"{partial}/state.json").read())["frames"] == 4
    capsys.readouterr()
    main.run(transfer, f"{bucket}/transfer")
    assert "resuming pose at frame 5 of 12" in capsys.readouterr().out
    assert remote_files(f"{bucket}/transfer") == {"pose.mp4", "pose_side_by_side.mp4", "transfer_summary.json",
                                                  "report/index.html", "report/runs.json"}
    page = gfile.GFile(f"{bucket}/transfer/report/index.html").read()  # the results page, in the bucket
    assert 'src="../pose.mp4"' in page and 'src="../pose_side_by_side.mp4"' in page
    local_copy = tmp_path / "check.mp4"
    gfile.copy(f"{bucket}/transfer/pose.mp4", str(local_copy))
    assert video.probe_video(str(local_copy)).num_frames == 12
    local_copy.unlink()

    # Nothing local but the temporary directories: no "ram:" directory, no leftover temporary file.
    assert local_entries(tmp_path / "cwd") == []
    assert local_entries(tmp_path / "tmp") == temporary_before
    repo_after = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True,
                                text=True).stdout
    assert repo_after == repo_before


def test_a_video_at_a_url_is_read_through_one_local_copy(ram):
    bucket, tmp_path = ram
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 48, 3), np.uint8)
    local = str(tmp_path / "clip.mp4")
    video.write_video(local, frames, fps=10)
    gfile.makedirs(f"{bucket}/in")
    gfile.copy(local, f"{bucket}/in/clip.mp4")
    info = video.probe_video(f"{bucket}/in/clip.mp4")
    assert (info.num_frames, info.height, info.width) == (5, 32, 48) and abs(info.fps - 10) < 1e-6
    np.testing.assert_array_equal(np.stack(list(video.iter_frames(f"{bucket}/in/clip.mp4"))),
                                  np.stack(list(video.iter_frames(local))))
    copy_dir = os.path.dirname(storage.local_file(f"{bucket}/in/clip.mp4"))
    assert os.path.dirname(copy_dir) == str(tmp_path / "tmp")  # in the temporary directory, made once
    assert [n for n in local_entries(tmp_path / "tmp") if n.startswith("edn_jax_input_")] == [os.path.basename(copy_dir)]
    with pytest.raises(EdnError, match="video not found: ram://.*missing.mp4"):
        video.probe_video(f"{bucket}/in/missing.mp4")


def test_a_bucket_that_cannot_be_reached_is_one_error_line(tmp_path):
    """No network (or no credentials): one line naming the URL and the fix, before any work, and no
    local directory named "gs:" (an os.makedirs on the URL)."""
    done = subprocess.run([sys.executable, "-m", "edn_jax.main", f"--config={REPO / 'configs' / 'tiny.py'}",
                           "--workdir=gs://edn-jax-no-such-bucket/run"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --workdir gs://edn-jax-no-such-bucket/run cannot be "), lines
    assert "credentials" in lines[0] and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_a_url_in_the_config_is_checked_before_any_work(monkeypatch):
    class Silent:  # a bucket that never answers
        def exists(self, path):
            time.sleep(30)

    monkeypatch.setattr(storage, "_gfile", Silent)
    monkeypatch.setattr(storage, "REACH_TIMEOUT_S", 0.2)
    config = tiny_config()
    config.data.dataset_dir = "gs://edn-jax-data/tfds/x"
    started = time.monotonic()
    with pytest.raises(EdnError) as caught:
        command_line.check_remote_paths(config)
    assert_facts(caught.value, "--config.data.dataset_dir", "gs://edn-jax-data/tfds/x", "cannot be reached",
                 "no answer in 0 s", "credentials")
    assert time.monotonic() - started < 5


def test_a_gs_workdir_reaches_orbax_and_tfds_as_the_url(monkeypatch):
    """Orbax (TensorStore) and TFDS write gs:// themselves: they must be handed the URL, not a local
    path made from it."""
    assert checkpoints.checkpoint_dir("gs://b/run", "global") == "gs://b/run/checkpoints/global"
    seen = {}

    class Manager:
        def __init__(self, directory, **kwargs):
            seen["orbax"] = directory

    monkeypatch.setattr(checkpoints.ocp, "CheckpointManager", Manager)
    ckpt = checkpoints.Checkpoints(checkpoints.checkpoint_dir("gs://b/run", "global"), {})
    assert seen["orbax"] == ckpt.directory == "gs://b/run/checkpoints/global"

    class Builder:
        def __init__(self, data_dir, config):
            seen["tfds"] = data_dir

    monkeypatch.setattr(build.synth, "Builder", Builder)
    build.make_builder(tiny_config(), "gs://b/run")
    assert seen["tfds"] == "gs://b/run/tfds"
    assert storage.absolute("gs://b/run/") == "gs://b/run" and os.path.isabs(storage.absolute("x"))
