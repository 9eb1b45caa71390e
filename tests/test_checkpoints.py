"""Checkpoints: Orbax's save policy and SIGTERM, the training record, and trained model directories that
describe themselves (rebuilt with no training config, overrides checked, older checkpoints still load)."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ONE_DEVICE_XLA_FLAGS, REPO, assert_facts, one_device_mesh, synthetic_target_config
from configs import cpu, default
from edn_jax import main, stages
from edn_jax.errors import EdnError
from edn_jax.models import checkpoints, inference
from edn_jax.runtime import video
from edn_jax.training import train
from edn_jax.training.generator_stage import GeneratorTrainer


def _render(model, frames=3):
    """A few frames of the model's sequential render of a fixed random input."""
    h, w = model.stage.height, model.stage.width
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.uniform(-1, 1, (frames, h, w, 3)).astype(np.float32))
    boxes = jnp.asarray(np.tile(np.float32([[w / 4, h / 4, w / 2, h / 2]]), (frames, 1)))
    out, _ = inference.render_chunk(model.renderer, model.params, labels, boxes, jnp.ones(frames, bool),
                                    inference.initial_carry(h, w))
    return np.asarray(out)


def test_orbax_saves_at_the_interval_and_the_last_step_and_sigterm_asks_to_stop(tmp_path):
    state = {"w": jnp.arange(4.0)}
    before = signal.getsignal(signal.SIGTERM)
    with checkpoints.Checkpoints(str(tmp_path / "ckpt"), {"model": "x"}, keep=10, every=3, last_step=7) as ckpt:
        saved = [step for step in range(1, 8) if ckpt.save(step, state, {"step": step})]
        ckpt.wait()
        assert saved == [3, 6, 7] and ckpt.latest_step() == 7
        assert not ckpt.preempted(7)
        os.kill(os.getpid(), signal.SIGTERM)  # what a Cloud TPU preemption sends
        assert ckpt.preempted(7) and ckpt.sigterm
        restored, meta = ckpt.restore(6, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
    np.testing.assert_array_equal(restored["w"], np.arange(4.0))
    assert meta["input"] == {"step": 6} and meta["signature"] == {"model": "x"}
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    with pytest.raises(EdnError, match="different model"):
        with checkpoints.Checkpoints(str(tmp_path / "ckpt"), {"model": "y"}) as other:
            other.restore(6, state)


def _trained_generators(config, workdir):
    """(renderer, params) of the face stage's full training state, restored the way training resumes."""
    stage = stages.plan_stages(config)[-1]
    state = train.restore_final(workdir, config, one_device_mesh(), stage)
    return train.make_trainer(config, one_device_mesh(), stage).renderer(state)


def test_a_model_directory_rebuilds_its_networks_without_the_training_config(synthetic_target):
    """The synthetic target was trained with configs/tiny.py's sizes (and the conftest's changes to them),
    none of which paper-size defaults have."""
    config, workdir = synthetic_target
    model = checkpoints.load_trained_model(default.get_config(), workdir)  # paper-size defaults
    assert default.get_config().model.ngf != config.model.ngf
    assert (model.stage.name, model.stage.height, model.stage.num_steps) == ("face", 64, 1)
    assert (model.config.model.ngf, model.config.model.face_ngf, model.config.model.num_d) == (8, 8, 1)
    assert model.config.train.height == 64 and model.config.loss.lambda_l1 == 10.0
    assert model.dataset_dir and os.path.isfile(os.path.join(model.dataset_dir, "dataset_info.json"))
    renderer, params = _trained_generators(config, workdir)
    assert model.renderer == renderer
    trained = _render(checkpoints.TrainedModel(renderer, params, model.stage, config))
    np.testing.assert_array_equal(_render(model), trained)
    # Only the generators were restored: the trainer's state also holds discriminators and Adam moments
    # (and this model has no background plate: model.background="none").
    assert set(model.params) == {"g", "face", "background"} and model.params["background"] is None
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(model.params), jax.device_get(params))
    # An earlier stage is rebuilt at its own size and steps.
    first = checkpoints.load_trained_model(default.get_config(), workdir, stage_name="global")
    assert first.stage.name == "global" and not first.renderer.has_face


def test_an_explicit_setting_that_contradicts_the_record_is_refused(synthetic_target):
    _, workdir = synthetic_target
    config = default.get_config()
    config.model.ngf = 16
    with pytest.raises(EdnError) as caught:
        checkpoints.load_trained_model(config, workdir, explicit=stages.explicit_fields(config, ["model.ngf"]))
    assert_facts(caught.value, "--config.model.ngf=16", "conflicts", workdir, "model.ngf=8", "drop the override")
    config.model.ngf = 8  # agreeing with the record is fine
    checkpoints.load_trained_model(config, workdir, explicit=["model.ngf"])
    # A config file that differs from the defaults counts as explicit: configs/cpu.py's sizes are not the model's.
    with pytest.raises(EdnError, match="conflicts with the model"):
        checkpoints.load_trained_model(cpu.get_config(), workdir, explicit=stages.explicit_fields(cpu.get_config()))
    # The compute dtype may change after training.
    config.model.dtype = "bfloat16"
    model = checkpoints.load_trained_model(config, workdir, explicit=["model.dtype"])
    assert model.renderer.generator.dtype == jnp.bfloat16


def test_checkpoints_written_before_training_records_still_load(tmp_path):
    """Today's metadata minus the record: what checkpoints of earlier versions hold ({input, signature})."""
    config = synthetic_target_config("global")
    config.model.ngf = 12
    stage = stages.plan_stages(config)[0]
    trainer = GeneratorTrainer.create(config, one_device_mesh(), stage)
    state = trainer.init(3)
    with checkpoints.Checkpoints(checkpoints.checkpoint_dir(str(tmp_path), "global"), trainer.signature()) as ckpt:
        ckpt.save(7, state, {"step": 7}, force=True)
        ckpt.wait()
        assert set(ckpt.meta(7)) == {"input", "signature"}
    model = checkpoints.load_trained_model(default.get_config(), str(tmp_path))
    assert (model.stage.name, model.stage.height, model.stage.num_steps) == ("global", 64, 7)
    assert model.config.model.ngf == 12
    renderer, params = trainer.renderer(state)
    np.testing.assert_array_equal(_render(model), _render(checkpoints.TrainedModel(renderer, params, stage, config)))


def test_an_unfinished_stage_is_refused(tmp_path):
    config = synthetic_target_config("global")
    config.train.num_steps, config.train.checkpoint_every = 3, 1
    trainer = GeneratorTrainer.create(config, one_device_mesh())
    with train.stage_checkpoints(str(tmp_path), config, trainer.stage, trainer.signature(), str(tmp_path)) as ckpt:
        ckpt.save(1, trainer.init(0), {"step": 1})
        ckpt.wait()
    with pytest.raises(EdnError) as caught:
        checkpoints.load_trained_model(default.get_config(), str(tmp_path))
    assert_facts(caught.value, "step 1", "global stage", "3 steps")


@pytest.mark.slow
def test_transfer_of_a_cpu_config_model_with_overrides_through_plain_transfer_config(tmp_path):
    """configs/cpu.py plus overrides trains; plain configs/transfer.py renders it, and refuses an override
    that contradicts it in one line."""
    env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS=ONE_DEVICE_XLA_FLAGS)
    model = tmp_path / "model"
    overrides = ["--config.model.ngf=8", "--config.model.n_downsampling=2", "--config.model.n_blocks=1",
                 "--config.model.ndf=8", "--config.model.num_d=1", "--config.model.n_layers_d=1",
                 "--config.model.face_ngf=8", "--config.model.face_ndf=8", "--config.model.face_n_blocks=1",
                 "--config.loss.perceptual=none", "--config.train.height=32", "--config.train.width=32",
                 "--config.train.batch_size=1", "--config.train.num_steps=1", "--config.train.decay_steps=0",
                 "--config.train.face.num_steps=1", "--config.train.face.decay_steps=0",
                 "--config.train.face.d_alone_steps=1", "--config.train.evaluate_holdout=False",
                 "--config.synthetic.num_frames=10"]
    train_run = subprocess.run([sys.executable, "-m", "edn_jax.main", "--config=configs/cpu.py",
                                f"--workdir={model}", *overrides], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
    assert train_run.returncode == 0, train_run.stderr[-2000:]
    transfer = [sys.executable, "-m", "edn_jax.main", "--config=configs/transfer.py",
                f"--config.transfer.model_workdir={model}", "--config.transfer.synthetic_frames=5"]
    done = subprocess.run(transfer + [f"--workdir={tmp_path / 'out'}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stage 2/2 (face, 32x32) model" in done.stdout
    assert len(list(video.iter_frames(str(tmp_path / "out" / "synthetic_seed1.mp4")))) == 5
    refused = subprocess.run(transfer + [f"--workdir={tmp_path / 'out2'}", "--config.model.ngf=64"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "--config.model.ngf=64 conflicts with the model" in errors[0] and "model.ngf=8" in errors[0]
    assert not (tmp_path / "out2" / "synthetic_seed1.mp4").exists()
    # The same flag through main.run: overrides are the flag names, checked the same way.
    config = default.get_config()
    config.mode, config.transfer.model_workdir, config.model.ngf = "transfer", str(model), 64
    with pytest.raises(EdnError, match="conflicts with the model"):
        main.run(config, str(tmp_path / "out3"), ["model.ngf"])
