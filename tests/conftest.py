"""Shared fixtures. Real footage is read from ../shared/data beside the checkout (never copied in)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
# Eight fake CPU devices for sharding tests; must be set before JAX is first imported.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

# One compilation cache for the session, subprocesses included (they inherit the environment):
# many tests and CLI runs compile the same tiny programs, and on 2 cores compiling is most of
# the suite's time. Only compiles of 1 s or more are stored. A fresh directory per session,
# removed when the session ends (about 150 MiB), so nothing outlives the run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _session_cache = tempfile.mkdtemp(prefix="edn_jax_test_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _session_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
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


def real_video(name: str) -> str:
    path = DATA / name
    assert path.exists(), f"real test video missing: {path} (tests expect ../shared/data beside the checkout)"
    return str(path)


@pytest.fixture(scope="session")
def tracked_real():
    """Tracks the real videos once per session: {(video, subject policy): (keypoints, stats)}."""
    from edn_jax import video
    from edn_jax.pose import detector, tracking

    cache = {}

    def get(name: str, subject: str = "largest"):
        key = (name, subject)
        if key not in cache:
            with detector.MediaPipeHolisticDetector() as det:
                cache[key] = tracking.track_video(det, video.iter_frames(real_video(name)),
                                                  tracking.TrackerConfig(subject=subject))
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
    with pytest.MonkeyPatch.context() as patch:  # one device: 8 fake ones on 2 cores compile slowly
        patch.setattr(train, "make_mesh", lambda devices=None: one_device_mesh())
        train.train_and_evaluate(config, workdir)
    return config, workdir


def one_device_mesh():
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from edn_jax import train

    return Mesh(np.array(jax.devices()[:1]), (train.DATA_AXIS,))
