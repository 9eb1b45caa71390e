"""The training loop: staged training end to end with reruns skipping finished stages, the NaN stop,
an incompatible checkpoint kept, exact resume after kill -9, SIGTERM saving a checkpoint, and the demo."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ONE_DEVICE_XLA_FLAGS, REPO, one_device_mesh, tensorboard_tags, tiny_config
from edn_jax import stages
from edn_jax.data import build
from edn_jax.errors import EdnError
from edn_jax.models import checkpoints
from edn_jax.runtime import sharding
from edn_jax.training import generator_stage, train


def test_staged_training_end_to_end_then_rerun_skips_finished_stages(tmp_path, capsys):
    config = tiny_config("global,local,face", steps=2)
    config.train.evaluate_holdout = True
    config.train.face.d_alone_steps = 0  # one face step program to compile; the D-alone phase: test_face_stage.py
    result = train.train_and_evaluate(config, str(tmp_path), one_device_mesh())
    out = capsys.readouterr().out
    for line in ("stage 1/3 (global, 32x32): training steps 1..2",
                 "stage 2/3 (local, 64x64): starting from the global stage's final checkpoint (step 2)",
                 "stage 3/3 (face, 64x64): starting from the local stage's final checkpoint (step 2)",
                 "stage 3/3 (face, 64x64): held-out face crops"):
        assert line in out, line
    assert [s["stage"] for s in result["stages"]] == ["global", "local", "face"]
    for stage in ("global", "local", "face"):
        assert sorted(os.listdir(tmp_path / "checkpoints" / stage)) == ["1", "2"]
        assert os.listdir(tmp_path / "tensorboard" / stage)
        assert sorted(os.listdir(tmp_path / "samples" / stage)) == ["step_00000001.png", "step_00000002.png"]
    holdout = result["holdout"]
    assert {"face_l1_generated", "face_l1_without_face", "face_lpips_generated"} <= set(holdout)
    # TensorBoard, by name: the step's terms, the schedule, speed, samples and the held-out scores with baselines.
    for stage, tags in {"global": {"g_gan", "g_feat", "g_l1", "g_total", "d_loss", "g_grad_norm", "d_param_norm"},
                        "local": {"g_total", "d_loss"},
                        "face": {"face_g_gan", "face_g_total", "face_d_loss", "faces", "holdout/face_l1_without_face",
                                 "holdout/face_lpips_generated"}}.items():
        common = {"learning_rate", "stage", "steps_per_sec", "samples/stick_generated_real",
                  "holdout/stick_generated_real", "holdout/ssim_generated", "holdout/body_ssim_mean_train_frame",
                  "holdout/body_ssim_nearest_train_frame", "holdout/body_lpips_generated"}
        assert tags | common <= tensorboard_tags(tmp_path / "tensorboard" / stage), stage
    # The face stage's generator is the local stage's final one, bit for bit.
    local = train.restore_final(str(tmp_path), config, one_device_mesh(), stages.plan_stages(config)[1])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(result["state"].g_params), jax.device_get(local.g_params))

    first_summary = json.load(open(tmp_path / "train_summary.json"))
    again = train.train_and_evaluate(config, str(tmp_path), one_device_mesh())
    out = capsys.readouterr().out
    assert out.count("already trained") == 3 and all(s["skipped"] for s in again["stages"])
    # The rerun keeps what the training run reported: every stage's held-out scores and final metrics.
    rerun_summary = json.load(open(tmp_path / "train_summary.json"))
    assert rerun_summary["holdout"] == first_summary["holdout"] and rerun_summary["holdout"]
    for before, after in zip(first_summary["stages"], rerun_summary["stages"], strict=True):
        assert after["skipped"] and after["holdout"] == before["holdout"] and after["metrics"] == before["metrics"]


def test_divergence_stops_training_with_a_clear_message(tmp_path, monkeypatch):
    real_step = generator_stage.GeneratorTrainer.step

    def poisoned(self, state, batch, *args):
        state, metrics = real_step(self, state, batch, *args)
        return state, dict(metrics, nonfinite=jnp.float32(int(state.step) >= 3))

    monkeypatch.setattr(generator_stage.GeneratorTrainer, "step", poisoned)
    config = tiny_config(num_steps=6)
    with pytest.raises(EdnError, match="diverged.*step 4.*last good checkpoint \\(step 2\\)"):
        train.train_and_evaluate(config, str(tmp_path), one_device_mesh())


def test_incompatible_checkpoint_is_refused_and_kept(tmp_path):
    config = tiny_config(num_steps=2, evaluate_holdout=False)
    train.train_and_evaluate(config, str(tmp_path), one_device_mesh())
    saved = sorted(os.listdir(tmp_path / "checkpoints" / "global"))
    config.model.ngf = 16
    with pytest.raises(EdnError, match="different model"):
        train.train_and_evaluate(config, str(tmp_path), one_device_mesh())
    assert sorted(os.listdir(tmp_path / "checkpoints" / "global")) == saved


def _train_cmd(workdir, dataset_dir, steps):
    return [sys.executable, "-m", "edn_jax.main", "--config=configs/default.py", f"--workdir={workdir}",
            "--config.mode=train", "--config.model.ngf=8", "--config.model.n_downsampling=2",
            "--config.model.n_blocks=1", "--config.model.ndf=8", "--config.model.n_layers_d=2",
            "--config.loss.perceptual=none", "--config.train.stages=global", "--config.train.height=32", "--config.train.width=32",
            "--config.train.batch_size=8", f"--config.train.num_steps={steps}", "--config.train.decay_steps=4",
            "--config.train.log_every=1", "--config.train.sample_every=100", "--config.train.checkpoint_every=2",
            "--config.train.evaluate_holdout=False", f"--config.data.dataset_dir={dataset_dir}"]


def _final_params(workdir):
    config = tiny_config()
    config.train.num_steps = 10
    trainer = generator_stage.GeneratorTrainer.create(config, sharding.make_mesh())
    ckpt = checkpoints.Checkpoints(checkpoints.checkpoint_dir(str(workdir), "global"), trainer.signature())
    state, _ = ckpt.restore(ckpt.latest_step(), trainer.abstract_state())
    ckpt.close()
    return jax.device_get(state)


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
    config = tiny_config()
    builder = build.make_builder(config, str(tmp_path), size=(32, 32))
    builder.download_and_prepare()
    dataset_dir = str(builder.data_dir)
    # Both runs see the same 8 fake CPU devices as this process (conftest sets XLA_FLAGS).
    env = dict(os.environ, PYTHONPATH=str(REPO))
    steps = 10
    # The uninterrupted run beside the one that is killed (2 cores, and each mostly compiles on one).
    straight = subprocess.Popen(_train_cmd(tmp_path / "straight", dataset_dir, steps), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(interrupted, dataset_dir, steps), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (interrupted / "checkpoints" / "global" / "4").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-2000:]
    done = sorted(int(p) for p in os.listdir(interrupted / "checkpoints" / "global") if p.isdigit())
    assert done and done[-1] < steps, done  # killed before the end
    resumed = subprocess.run(_train_cmd(interrupted, dataset_dir, steps), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the checkpoint" in resumed.stdout
    a, b = _final_params(tmp_path / "straight"), _final_params(interrupted)
    assert int(a.step) == int(b.step) == steps
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    """Cloud TPU preemption: SIGTERM mid-run saves the current step, exits 0, and a rerun resumes."""
    builder = build.make_builder(tiny_config(), str(tmp_path), size=(32, 32))
    builder.download_and_prepare()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workdir = tmp_path / "run"
    cmd = _train_cmd(workdir, str(builder.data_dir), 400)  # far more steps than it will get to
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (workdir / "checkpoints" / "global" / "2").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: saved a checkpoint at step" in out
    saved = int(out.split("SIGTERM: saved a checkpoint at step ")[1].split(";")[0])
    assert 2 <= saved < 400 and (workdir / "checkpoints" / "global" / str(saved)).exists()


@pytest.mark.slow
def test_launch_demo_trains_and_says_where_outputs_are(tmp_path):
    """./launch.sh demo end to end (setup, build, both stages, held-out evaluation) on a short schedule."""
    env = dict(os.environ, EDN_DEMO_WORKDIR=str(tmp_path / "demo"),
               XLA_FLAGS=ONE_DEVICE_XLA_FLAGS)  # the real CPU device, as users run it
    flags = ["--config.synthetic.num_frames=20", "--config.train.num_steps=4", "--config.train.decay_steps=2",
             "--config.train.sample_every=2", "--config.train.checkpoint_every=2", "--config.train.log_every=2",
             "--config.train.face.num_steps=2", "--config.train.face.decay_steps=1",
             "--config.train.face.d_alone_steps=0", "--config.transfer.synthetic_frames=8",
             # the demo's path with smaller networks (VGG's and the demo size's compiles are tested elsewhere)
             "--config.loss.perceptual=none", "--config.model.n_blocks=1", "--config.model.ngf=8",
             "--config.model.ndf=8", "--config.model.num_d=1", "--config.model.face_ngf=8",
             "--config.model.face_n_blocks=1", "--config.model.face_ndf=8"]
    proc = subprocess.run(["./launch.sh", "demo", *flags], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stage 1/2 (global, 96x96): held-out SSIM" in proc.stdout
    assert "stage 2/2 (face, 96x96): held-out face crops" in proc.stdout
    for name in ("checkpoints", "samples", "tensorboard", "train_summary.json"):
        assert str(tmp_path / "demo" / name) in proc.stdout, name
    assert sorted(os.listdir(tmp_path / "demo" / "samples" / "global")) == ["step_00000002.png", "step_00000004.png"]
    assert sorted(os.listdir(tmp_path / "demo" / "samples" / "face")) == ["step_00000002.png"]
    assert sorted(os.listdir(tmp_path / "demo" / "tensorboard")) == ["face", "global"]
    for stage in ("global", "face"):
        assert (tmp_path / "demo" / f"holdout_samples_{stage}.png").exists()
    # then the transfer of another synthetic dancer onto the trained target
    transfer = tmp_path / "demo" / "transfer"
    videos = sorted(p.name for p in transfer.glob("*.mp4"))
    assert len(videos) == 2 and any(v.endswith("_side_by_side.mp4") for v in videos), videos
    assert str(transfer) in proc.stdout
