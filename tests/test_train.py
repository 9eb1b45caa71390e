"""Training: one step per variant, sharded == single-device, NaN guard, bad configs, exact resume after kill -9."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import REPO
from configs import default, tiny
from edn_jax import main, train
from edn_jax.errors import EdnError


def tiny_config(perceptual="none", **train_overrides):
    config = tiny.get_config()
    config.loss.perceptual = perceptual
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def random_batch(batch=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
            for k in ("label_prev", "label", "image_prev", "image")}


def put(batch, mesh):
    sharding = NamedSharding(mesh, P(train.DATA_AXIS))
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}


@pytest.mark.parametrize("variant", [
    {"perceptual": "vgg16"},
    {"perceptual": "none", "use_prev_label": True},
    {"perceptual": "none", "dtype": "bfloat16"},
    {"perceptual": "none", "lambda_l1": 100.0},
])
def test_one_train_step_per_variant(variant):
    config = tiny_config(perceptual=variant.get("perceptual", "none"))
    config.model.use_prev_label = variant.get("use_prev_label", False)
    config.model.dtype = variant.get("dtype", "float32")
    config.loss.lambda_l1 = variant.get("lambda_l1", 0.0)
    mesh = train.make_mesh()
    trainer = train.Trainer.create(config, mesh)
    state = trainer.init(0)
    before = jax.device_get(state.g_params)
    state, metrics = trainer.step(state, put(random_batch(), mesh))
    metrics = jax.device_get(metrics)
    assert int(state.step) == 1 and metrics["nonfinite"] == 0
    assert all(np.isfinite(v) for v in metrics.values())
    assert ("g_vgg" in metrics) == (variant.get("perceptual") == "vgg16")
    if "g_vgg" in metrics:
        assert metrics["g_vgg"] > 0
    assert ("g_l1" in metrics) == (config.loss.lambda_l1 > 0)
    if "g_l1" in metrics:  # random images in [-1, 1] vs tanh outputs near 0: mean |diff| is about 0.5 per frame
        assert 50 < metrics["g_l1"] < 150
    changed = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), before,
                           jax.device_get(state.g_params))
    assert max(jax.tree.leaves(changed)) > 0


def test_single_frame_pix2pixhd_baseline_ignores_the_previous_frame():
    """model.temporal=False is the paper's pix2pixHD baseline: G sees the stick figure alone and D
    judges single frames, so a frame's render cannot depend on anything before it."""
    from edn_jax import inference

    config = tiny_config()
    config.model.temporal = False
    mesh = train.make_mesh(jax.devices()[:1])
    trainer = train.Trainer.create(config, mesh)
    state = trainer.init(0)
    in_channels = lambda tree: {a.shape[2] for a in jax.tree.leaves(tree) if a.ndim == 4}  # noqa: E731
    assert 3 in in_channels(state.g_params) and 6 not in in_channels(state.g_params)
    assert 6 in in_channels(state.d_params) and 12 not in in_channels(state.d_params)
    batch = random_batch(batch=2)
    state, metrics = trainer.step(state, put(batch, mesh))
    assert float(metrics["nonfinite"]) == 0 and np.isfinite(float(metrics["g_total"]))

    labels = jnp.asarray(batch["label"])
    alone = trainer.generator.apply({"params": state.g_params}, labels)
    renderer, params = trainer.renderer(state)
    assert not renderer.temporal
    boxes, valid = jnp.zeros((2, 4)), jnp.zeros((2,), bool)
    carry = (jnp.asarray(batch["image"][:1]), jnp.asarray(batch["label_prev"][:1]))  # a non-blank history
    sequential, _ = inference.render_chunk(renderer, params, labels, boxes, valid, carry)
    np.testing.assert_allclose(np.asarray(sequential), np.asarray(alone), atol=1e-5)
    _, fake = trainer.sample_fn(state.g_params, jnp.asarray(batch["label_prev"]) * 0 + 0.5, labels)
    np.testing.assert_allclose(np.asarray(fake), np.asarray(alone), atol=1e-5)

    temporal = train.Trainer.create(tiny_config(), mesh)  # the paper's model: the history matters
    t_state = temporal.init(0)
    t_renderer, t_params = temporal.renderer(t_state)
    blank = inference.initial_carry(32, 32)
    with_history, _ = inference.render_chunk(t_renderer, t_params, labels, boxes, valid, carry)
    from_blank, _ = inference.render_chunk(t_renderer, t_params, labels, boxes, valid, blank)
    assert float(jnp.abs(with_history[0] - from_blank[0]).max()) > 1e-3


def test_remat_modes_recompute_the_same_values():
    """train.remat trades compute for memory only. The checkpointed pieces give the plain pieces'
    values and gradients (VGG's perceptual loss, a generator pass), and the step really
    rematerialises them: none of them under "none", the 2 VGG passes under "perceptual", and
    also the 2 generator passes under "full" (counted in the traced step, nothing compiled)."""
    from edn_jax import losses
    from edn_jax.models import GlobalGenerator

    rng = np.random.default_rng(0)
    x, y = (rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32) for _ in range(2))
    perceptual = losses.make_perceptual_loss("vgg16")
    plain, remat = (jax.jit(jax.value_and_grad(lambda x, r=r: perceptual(x, y, remat=r))) for r in (False, True))
    for a, b in zip(plain(x), remat(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    generator = GlobalGenerator(output_nc=3, ngf=4, n_downsampling=1, n_blocks=1)
    inputs = np.concatenate([x, y], axis=-1)
    params = jax.jit(generator.init)(jax.random.key(0), inputs)
    grad = lambda g: jax.jit(jax.grad(lambda p: jnp.sum(g.apply(p, inputs) ** 2)))(params)  # noqa: E731
    for a, b in zip(jax.tree.leaves(grad(generator)), jax.tree.leaves(grad(train._RematApply(generator))), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    mesh, batch, counts = train.make_mesh(jax.devices()[:1]), random_batch(batch=1), {}
    for mode in train.REMAT_MODES:
        trainer = train.Trainer.create(tiny_config(perceptual="vgg16", batch_size=1, remat=mode), mesh)
        jaxpr = str(jax.make_jaxpr(trainer.step_fn)(trainer.abstract_state(), batch, trainer.perceptual))
        counts[mode] = jaxpr.count("remat2[")  # jax.checkpoint's primitive once differentiated
    assert counts == {"none": 0, "perceptual": 2, "full": 4}, counts


def test_sharded_step_equals_single_device_step():
    """8 devices with a batch of 1 each compute the step of 1 device with the batch of 8.

    After one step everything agrees, Adam's moments (the gradients) included. After the second,
    the params and metrics do; the second step's moments are not compared: Adam's first update
    is about lr * sign(g), so gradients within rounding of 0 (reduced in a different order on 8
    devices) move a param by +-lr, and the VGG loss carries that into every gradient of step 2.
    """
    config = tiny_config(perceptual="vgg16")
    batch = random_batch()
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = train.make_mesh(devices)
        trainer = train.Trainer.create(config, mesh)
        state = trainer.init(0)
        states = []
        for step in range(2):
            state, metrics = trainer.step(state, put(batch, mesh))
            jax.block_until_ready(state)
            states.append(jax.device_get(state))
        results.append((states, jax.device_get(metrics)))
    assert len(jax.devices()) == 8
    (one, m1), (eight, m8) = results
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),  # noqa: E731
                                                    rtol=2e-4, atol=2e-5)
    for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(eight[0]), strict=True):
        close(a, b)
    for name in ("g_params", "d_params"):
        for a, b in zip(jax.tree.leaves(getattr(one[1], name)), jax.tree.leaves(getattr(eight[1], name)), strict=True):
            close(a, b)
    for key in m1:
        np.testing.assert_allclose(m1[key], m8[key], rtol=1e-4, atol=1e-5)


def test_nonfinite_step_leaves_params_untouched():
    config = tiny_config()
    mesh = train.make_mesh()
    trainer = train.Trainer.create(config, mesh)
    state = trainer.init(0)
    before = jax.device_get((state.g_params, state.d_params, state.g_opt_state))
    batch = random_batch()
    batch["image"][0, 0, 0, 0] = np.nan
    state, metrics = trainer.step(state, put(batch, mesh))
    assert float(metrics["nonfinite"]) == 1.0 and int(state.step) == 1
    after = jax.device_get((state.g_params, state.d_params, state.g_opt_state))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_divergence_stops_training_with_a_clear_message(tmp_path, monkeypatch):
    real_step = train.Trainer.step

    def poisoned(self, state, batch, *args):
        state, metrics = real_step(self, state, batch, *args)
        return state, dict(metrics, nonfinite=jnp.float32(int(state.step) >= 3))

    monkeypatch.setattr(train.Trainer, "step", poisoned)
    config = tiny_config(num_steps=6)
    with pytest.raises(EdnError, match="diverged.*step 4.*last good checkpoint \\(step 2\\)"):
        train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("field,value,fragment", [
    ("model.ngf", 0, "ngf"), ("model.num_d", 0, "num_d"), ("train.learning_rate", -1.0, "learning_rate"),
    ("train.batch_size", 6, "does not split over 8 devices"), ("train.height", 30, r"not divisible by 2\^n_downsampling"),
    ("train.decay_steps", 10, "decay_steps"), ("loss.perceptual", "vgg11", "perceptual"), ("model.dtype", "fp8", "dtype"),
    ("model.temporal", False, "use_prev_label=True needs model.temporal=True"),
    ("train.remat", "some", "train.remat='some' is not known"),
])
def test_bad_training_values(tmp_path, field, value, fragment):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    config.model.use_prev_label = name == "temporal"
    with pytest.raises(EdnError, match=fragment):
        main.run(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_incompatible_checkpoint_is_refused_and_kept(tmp_path):
    config = tiny_config(num_steps=2, evaluate_holdout=False)
    train.train_and_evaluate(config, str(tmp_path))
    saved = sorted(os.listdir(tmp_path / "checkpoints" / "global"))
    config.model.ngf = 16
    with pytest.raises(EdnError, match="different model"):
        train.train_and_evaluate(config, str(tmp_path))
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
    trainer = train.Trainer.create(config, train.make_mesh())
    ckpt = train.Checkpoints.for_stage(str(workdir), trainer)
    state, _ = ckpt.restore(ckpt.latest_step(), trainer.abstract_state())
    ckpt.close()
    return jax.device_get(state)


def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
    from edn_jax import build

    config = tiny_config()
    builder = build.make_builder(config, str(tmp_path), size=(32, 32))
    builder.download_and_prepare()
    dataset_dir = str(builder.data_dir)
    # Both runs see the same 8 fake CPU devices as this process (conftest sets XLA_FLAGS).
    env = dict(os.environ, PYTHONPATH=str(REPO))
    steps = 10
    subprocess.run(_train_cmd(tmp_path / "straight", dataset_dir, steps), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(interrupted, dataset_dir, steps), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (interrupted / "checkpoints" / "global" / "4").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    """Cloud TPU preemption: SIGTERM mid-run saves the current step, exits 0, and a rerun resumes."""
    from edn_jax import build

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


def test_launch_demo_trains_and_says_where_outputs_are(tmp_path):
    """./launch.sh demo end to end (setup, build, both stages, held-out evaluation) on a short schedule."""
    env = dict(os.environ, EDN_DEMO_WORKDIR=str(tmp_path / "demo"), XLA_FLAGS="")  # the real CPU device, as users run it
    flags = ["--config.synthetic.num_frames=20", "--config.train.num_steps=4", "--config.train.decay_steps=2",
             "--config.train.sample_every=2", "--config.train.checkpoint_every=2", "--config.train.log_every=2",
             "--config.train.face.num_steps=2", "--config.train.face.decay_steps=1",
             "--config.train.face.d_alone_steps=1", "--config.transfer.synthetic_frames=8"]
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
