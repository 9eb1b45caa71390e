"""What the tests share: paths, the one tiny-config builder, scripted inputs, and checks of a
command line's outcome. (Fixtures are in conftest.py, which sets the suite's XLA flags before this
module, and JAX with it, is first imported.)"""

import copy
import dataclasses
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default, tiny
from edn_jax import synthetic
from edn_jax.data.batch import IMAGE_FIELDS, Batch
from edn_jax.models import inference
from edn_jax.pose import render
from edn_jax.runtime import images, sharding
from edn_jax.stages import plan_stages
from edn_jax.training.face_stage import FaceTrainer
from edn_jax.training.generator_stage import GeneratorTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
# Subprocesses that run on the one real CPU device, as users do (the demo, a CPU-config training):
# the suite's XLA flags without its 8 fake devices.
ONE_DEVICE_XLA_FLAGS = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
SYNTHETIC_TARGET_SIZE = 64


def tiny_config(stages: str = "global", *, steps: int | None = None, size: int | None = None, small_d: bool = False,
                perceptual: str = "none", **train):
    """configs/tiny.py (a 32x32 global stage, 8-channel networks), changed only where asked.

    ``steps``: the global stage (and the face stage if asked for) trains that many steps, the last
    half decaying, logged, sampled and checkpointed every step, with L1 at 10 and no held-out
    evaluation at the end of training.
    ``size``: the training frame's side. ``small_d``: one 1-layer discriminator (half the compile time).
    ``train``: any other ``train`` field.
    """
    config = tiny.get_config()
    config.train.stages = stages
    config.loss.perceptual = perceptual
    if steps is not None:
        config.loss.lambda_l1 = 10.0
        config.train.num_steps, config.train.decay_steps = steps, steps // 2
        if "face" in stages.split(","):
            config.train.face.num_steps, config.train.face.decay_steps = steps, steps // 2
        config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 1
        config.train.evaluate_holdout = False
    if size is not None:
        config.train.height = config.train.width = size
    if small_d:
        config.model.n_layers_d, config.model.num_d = 1, 1
    for key, value in train.items():
        config.train[key] = value
    return config


def synthetic_target_config(stages: str):
    """``tiny_config`` one step per stage at 64x64 with one 1-layer discriminator, the synthetic subject at that size."""
    config = tiny_config(stages, steps=1, size=SYNTHETIC_TARGET_SIZE, small_d=True)
    config.synthetic.height = config.synthetic.width = SYNTHETIC_TARGET_SIZE
    return config


def synthetic_pose_config(frames: int, size: int = 64):
    """configs/default.py's pose mode on ``frames`` frames of the synthetic subject at ``size`` x ``size``."""
    config = default.get_config()
    config.mode = "pose"
    config.synthetic.num_frames = frames
    config.synthetic.height = config.synthetic.width = size
    config.pose.output_height = size
    return config


def real_video(name: str) -> str:
    path = DATA / name
    assert path.exists(), f"real test video missing: {path} (tests expect ../shared/data beside the checkout)"
    return str(path)


def assert_one_line_error(proc, *fragments):
    """A finished command line (``subprocess.run`` result, text) stopped with one ``error:`` line naming
    ``fragments``, exit status 2 and no traceback; returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_facts(message, *facts: str) -> str:
    """``message`` (an exception or text) names every one of ``facts``: the values, names and fixes a
    reader needs, whatever sentence carries them. Returns the text."""
    text = str(message)
    missing = [fact for fact in facts if fact not in text]
    assert not missing, f"{text!r} does not name {missing}"
    return text


def one_device_mesh():
    """A 1-device mesh: for tests whose point is not sharding (8 fake devices on 2 cores compile slowly)."""
    return sharding.make_mesh(jax.devices()[:1])


def scripted_person(seed: int, frames: int, height: int, width: int, scale: float = 1.0, dx: float = 0.0,
                    dy: float = 0.0):
    """A synthetic person's keypoints [frames, points, 3] in a height x width frame, scaled about the
    origin and shifted by (dx, dy); missing points stay at (0, 0, 0)."""
    kps = synthetic.synthetic_keypoints(seed, frames, height, width, 30.0)
    present = kps[..., 2] > 0
    kps[..., 0] = np.where(present, kps[..., 0] * scale + dx, 0)
    kps[..., 1] = np.where(present, kps[..., 1] * scale + dy, 0)
    return kps


def scripted_records(frames: int, height: int, width: int):
    """Dataset-like records of ``scripted_person`` over random frames (one video), for input-pipeline tests."""
    rng = np.random.default_rng(1)
    kps = scripted_person(0, frames, height, width)
    return [{"frame": rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "keypoints": kps[i],
             "frame_index": i, "video_id": 0, "face_box": np.array([10, 4, 22, 16], np.float32), "face_valid": True}
            for i in range(frames)]


def model_section(**overrides) -> ml_collections.FrozenConfigDict:
    """configs/default.py's model section with ``overrides``, frozen as ``inference.Renderer`` holds it."""
    model = default.get_config().model
    model.update(overrides)
    return ml_collections.FrozenConfigDict(model)


def renderer_with(renderer, **model_overrides):
    """``renderer`` reading its model section with ``model_overrides`` (e.g. ``face_prev="raw"``)."""
    model = renderer.model.as_configdict()
    model.update(model_overrides)
    return dataclasses.replace(renderer, model=ml_collections.FrozenConfigDict(model))


def face_batch(batch=8, size=32, seed=0):
    """Random frames with per-example face boxes in different places; two examples have no face."""
    rng = np.random.default_rng(seed)
    out = {k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32) for k in IMAGE_FIELDS}
    for suffix in ("_prev", ""):
        x0 = rng.uniform(0, size - 12, batch)
        y0 = rng.uniform(0, size - 12, batch)
        out["face_box" + suffix] = np.stack([x0, y0, x0 + 12, y0 + 12], -1).astype(np.float32)
        valid = np.ones(batch, bool)
        valid[[1, batch - 2]] = False
        out["face_valid" + suffix] = valid
    return Batch(**out)


def face_trainer(config, mesh, perturb_head=False):
    """(face trainer, its first state, the frozen generator stage's state on the host).

    ``perturb_head``: the face generator's zero-initialised output conv made non-zero, so
    gradients reach all its layers from the first step (and its output is not the identity).
    """
    planned = plan_stages(config)
    previous = GeneratorTrainer.create(config, mesh, planned[0]).init(5)
    trainer = FaceTrainer.create(config, mesh, planned[1])
    state = trainer.init_from(0, previous)
    if perturb_head:
        head = state.face_g_params["head"]
        head = {"kernel": head["kernel"] + 0.05, "bias": head["bias"] + 0.1}
        state = state.replace(face_g_params=dict(state.face_g_params, head=head))
    return trainer, state, jax.device_get(previous)


def transfer_config(trained, **fields):
    """The training config of ``trained`` (config, model workdir) as a transfer config onto it; without
    the self score (a detection per frame) unless a test asks for it (tests/test_transfer.py does)."""
    base, workdir = trained
    config = copy.deepcopy(base)
    config.mode = "transfer"
    config.transfer.model_workdir = workdir
    config.transfer.self_score = False
    for key, value in fields.items():
        config.transfer[key] = value
    return config


def to_unit(u8):
    return u8.astype("float32") / 127.5 - 1.0


def reference_render(target, keypoints):
    """The whole sequence in one render_chunk call, as uint8 (and the stick figures)."""
    h, w = target.height, target.width
    labels = render.render_stick_figures(keypoints, h, w)
    boxes, valid = render.face_boxes(keypoints, h, w)
    exemplars = None if target.exemplars is None else jnp.asarray(to_unit(target.exemplars.lookup(keypoints)))
    out, _ = inference.render_chunk(target.model.renderer, target.model.params, jnp.asarray(to_unit(labels)),
                                    jnp.asarray(boxes), jnp.asarray(valid), inference.initial_carry(h, w),
                                    exemplars=exemplars)
    return np.asarray(images.to_uint8(out)), labels


def tensorboard_tags(directory) -> set[str]:
    """Every summary tag written under a TensorBoard run directory (scalars, images, hparams)."""
    import tensorflow as tf  # seconds to import: only the tests that read TensorBoard files pay it

    tags = set()
    for path in pathlib.Path(directory).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {value.tag for value in event.summary.value}
    return tags
