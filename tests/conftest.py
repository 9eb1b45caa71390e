"""Shared fixtures. Real footage is read from ../shared/data beside the checkout (never copied in)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
# Eight fake CPU devices for sharding tests; must be set before JAX is first imported. The suite
# compiles at LLVM -O0: compiling is most of its time on 2 cores. -O1 compiled about 30% faster than
# the default -O2 with the same numerics to ~1e-6; -O0 took the whole suite from 23:30 to 20:48 on
# 2 cores (summed test time 45.5 to 40.4 min) with every test passing unchanged (every comparison
# in the suite is between programs compiled alike). Subprocesses that run on the one real CPU device, as users do
# (the demo, a CPU-config training), get ONE_DEVICE_XLA_FLAGS.
_TEST_XLA_FLAGS = {"xla_force_host_platform_device_count": "8", "xla_backend_optimization_level": "0"}
ONE_DEVICE_XLA_FLAGS = "--xla_backend_optimization_level=0"
for _flag, _value in _TEST_XLA_FLAGS.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()

# One compilation cache for the session, subprocesses included (they inherit the environment):
# many tests and CLI runs compile the same tiny programs, and on 2 cores compiling is most of
# the suite's time. Compiles of 0.2 s or more are stored (a tiny model's init and sample
# programs are recompiled by many tests too). A fresh directory per session,
# removed when the session ends (about 150 MiB), so nothing outlives the run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _session_cache = tempfile.mkdtemp(prefix="edn_jax_test_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _session_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end to end through a subprocess (CI runs them too; "
                                       "-m 'not slow' skips them while iterating)")

DATA = REPO.parent / "shared" / "data"


def scripted_person(seed: int, frames: int, height: int, width: int, scale: float = 1.0, dx: float = 0.0,
                    dy: float = 0.0):
    """A synthetic person's keypoints [frames, points, 3] in a height x width frame, scaled about the
    origin and shifted by (dx, dy); missing points stay at (0, 0, 0)."""
    import numpy as np

    from edn_jax import synthetic

    kps = synthetic.synthetic_keypoints(seed, frames, height, width, 30.0)
    present = kps[..., 2] > 0
    kps[..., 0] = np.where(present, kps[..., 0] * scale + dx, 0)
    kps[..., 1] = np.where(present, kps[..., 1] * scale + dy, 0)
    return kps


def scripted_records(frames: int, height: int, width: int):
    """Dataset-like records of ``scripted_person`` over random frames (one video), for input-pipeline tests."""
    import numpy as np

    rng = np.random.default_rng(1)
    kps = scripted_person(0, frames, height, width)
    return [{"frame": rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "keypoints": kps[i],
             "frame_index": i, "video_id": 0, "face_box": np.array([10, 4, 22, 16], np.float32), "face_valid": True}
            for i in range(frames)]


def tiny_config(perceptual="none", **train_overrides):
    """configs/tiny.py (a 32x32 global stage), with ``loss.perceptual`` and ``train`` fields set."""
    from configs import tiny

    config = tiny.get_config()
    config.loss.perceptual = perceptual
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def staged_config(stages="global,local,face"):
    """configs/tiny.py with ``stages``, two steps each, everything logged and checkpointed every step."""
    from configs import tiny

    config = tiny.get_config()
    config.train.stages = stages
    config.loss.lambda_l1 = 10.0
    config.train.num_steps, config.train.decay_steps = 2, 1
    config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 1
    config.train.evaluate_holdout = False
    return config


def face_batch(batch=8, size=32, seed=0):
    """Random frames with per-example face boxes in different places; two examples have no face."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
           for k in ("label_prev", "label", "image_prev", "image")}
    for suffix in ("_prev", ""):
        x0 = rng.uniform(0, size - 12, batch)
        y0 = rng.uniform(0, size - 12, batch)
        out["face_box" + suffix] = np.stack([x0, y0, x0 + 12, y0 + 12], -1).astype(np.float32)
        valid = np.ones(batch, bool)
        valid[[1, batch - 2]] = False
        out["face_valid" + suffix] = valid
    return out


def face_trainer(config, mesh, perturb_head=False):
    """(face trainer, its first state, the frozen generator stage's state on the host).

    ``perturb_head``: the face generator's zero-initialised output conv made non-zero, so
    gradients reach all its layers from the first step (and its output is not the identity).
    """
    import jax

    from edn_jax import stages
    from edn_jax.face_stage import FaceTrainer
    from edn_jax.generator_stage import GeneratorTrainer

    planned = stages.plan_stages(config)
    previous = GeneratorTrainer.create(config, mesh, planned[0]).init(5)
    trainer = FaceTrainer.create(config, mesh, planned[1])
    state = trainer.init_from(0, previous)
    if perturb_head:
        head = state.face_g_params["head"]
        head = {"kernel": head["kernel"] + 0.05, "bias": head["bias"] + 0.1}
        state = state.replace(face_g_params=dict(state.face_g_params, head=head))
    return trainer, state, jax.device_get(previous)


def tensorboard_tags(directory) -> set[str]:
    """Every summary tag written under a TensorBoard run directory (scalars, images, hparams)."""
    import tensorflow as tf

    tags = set()
    for path in pathlib.Path(directory).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {value.tag for value in event.summary.value}
    return tags


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


def real_video(name: str) -> str:
    path = DATA / name
    assert path.exists(), f"real test video missing: {path} (tests expect ../shared/data beside the checkout)"
    return str(path)


@pytest.fixture(scope="session")
def tracked_real():
    """Tracks the real videos once per session, frame by frame with pose mode's detector and tracker
    settings (configs/default.py): {(video, subject policy): (keypoints, stats)}."""
    from configs import default
    from edn_jax import video
    from edn_jax.pose import detector, pipeline, video_tracker

    cache = {}

    def get(name: str, subject: str = "largest"):
        key = (name, subject)
        if key not in cache:
            pose_cfg = default.get_config().pose
            pose_cfg.subject = subject
            with detector.from_config(pose_cfg) as det:
                cache[key] = video_tracker.track_video(det, video.iter_frames(real_video(name)),
                                                       pipeline.tracker_config(pose_cfg))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def cam01_target(tmp_path_factory):
    """(config, workdir) of a tiny 128x128 global-stage model of single_person_cam01, trained for one step
    on its first 80 frames; build.val_fraction holds out the last 20 (the real-footage target)."""
    from configs import tiny
    from edn_jax import train

    config = tiny.get_config()
    config.input.video = real_video("single_person_cam01.mp4")
    config.input.max_frames = 100
    config.build.val_fraction = 0.2
    config.model.n_layers_d, config.model.num_d = 1, 1
    config.loss.lambda_l1 = 10.0
    config.train.height = config.train.width = 128  # MediaPipe finds nobody in 64x64 frames of this video
    config.train.num_steps, config.train.decay_steps = 1, 0
    config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 1
    config.train.evaluate_holdout = False
    workdir = str(tmp_path_factory.mktemp("cam01_target"))
    train.train_and_evaluate(config, workdir, one_device_mesh())  # 8 fake devices on 2 cores compile slowly
    return config, workdir


def one_device_mesh():
    """A 1-device mesh: for tests whose point is not sharding (8 fake devices on 2 cores compile slowly)."""
    import jax

    from edn_jax import sharding

    return sharding.make_mesh(jax.devices()[:1])


SYNTHETIC_TARGET_SIZE = 64


def synthetic_target_config(stages="global,face"):
    """configs/tiny.py at 64x64 with one 1-layer discriminator and one step per stage."""
    from configs import tiny

    config = tiny.get_config()
    config.train.stages = stages
    config.model.n_layers_d, config.model.num_d = 1, 1
    config.loss.lambda_l1 = 10.0
    config.train.height = config.train.width = SYNTHETIC_TARGET_SIZE
    config.train.num_steps, config.train.decay_steps = 1, 0
    config.train.face.num_steps, config.train.face.decay_steps, config.train.face.d_alone_steps = 1, 0, 1
    config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 1
    config.train.evaluate_holdout = False
    config.synthetic.height = config.synthetic.width = SYNTHETIC_TARGET_SIZE
    return config


@pytest.fixture(scope="session")
def synthetic_target(tmp_path_factory):
    """(config, model workdir) of a tiny global+face model trained on the synthetic subject."""
    from edn_jax import train

    config = synthetic_target_config()
    workdir = str(tmp_path_factory.mktemp("target"))
    train.train_and_evaluate(config, workdir, one_device_mesh())
    return config, workdir


def transfer_config(trained, **fields):
    """The training config of ``trained`` (config, model workdir) as a transfer config onto it; without
    the self score (a detection per frame) unless a test asks for it (tests/test_transfer.py does)."""
    import copy

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
    import jax.numpy as jnp
    import numpy as np

    from edn_jax import inference
    from edn_jax.pose import render

    h, w = target.height, target.width
    labels = render.render_stick_figures(keypoints, h, w)
    boxes, valid = render.face_boxes(keypoints, h, w)
    exemplars = None if target.exemplars is None else jnp.asarray(to_unit(target.exemplars.lookup(keypoints)))
    out, _ = inference.render_chunk(target.model.renderer, target.model.params, jnp.asarray(to_unit(labels)),
                                    jnp.asarray(boxes), jnp.asarray(valid), inference.initial_carry(h, w),
                                    exemplars=exemplars)
    return np.asarray(inference.to_uint8(out)), labels
