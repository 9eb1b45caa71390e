"""Shared fixtures. Real footage is read from ../shared/data beside the checkout (never copied in)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
# Eight fake CPU devices for sharding tests; must be set before JAX is first imported. The suite
# compiles at LLVM -O0: compiling is most of its time on 2 cores. -O1 compiled about 30% faster than
# the default -O2 with the same numerics to ~1e-6; -O0 took the whole suite from 23:29 to 20:48 on
# 2 cores (summed test time 45.5 to 40.4 min) with every test passing unchanged (every comparison
# in the suite is between programs compiled alike). Subprocesses that run on the one real CPU
# device, as users do (the demo, a CPU-config training), get helpers.ONE_DEVICE_XLA_FLAGS: these
# flags without the fake devices.
_TEST_XLA_FLAGS = {"xla_force_host_platform_device_count": "8", "xla_backend_optimization_level": "0"}
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

import pytest  # noqa: E402

from configs import default  # noqa: E402
from edn_jax.pose import detector, pipeline, video_tracker  # noqa: E402
from edn_jax.runtime import video  # noqa: E402
from edn_jax.training import train  # noqa: E402
from helpers import one_device_mesh, real_video, synthetic_target_config, tiny_config  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end to end through a subprocess (CI runs them too; "
                                       "-m 'not slow' skips them while iterating)")


@pytest.fixture(scope="session")
def tracked_real():
    """Tracks the real videos once per session, frame by frame with pose mode's detector and tracker
    settings (configs/default.py): {(video, subject policy): (keypoints, stats)}."""
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
    config = tiny_config(steps=1, size=128, small_d=True)  # MediaPipe finds nobody in 64x64 frames of this video
    config.input.video = real_video("single_person_cam01.mp4")
    config.input.max_frames = 100
    config.build.val_fraction = 0.2
    workdir = str(tmp_path_factory.mktemp("cam01_target"))
    train.train_and_evaluate(config, workdir, one_device_mesh())  # 8 fake devices on 2 cores compile slowly
    return config, workdir


@pytest.fixture(scope="session")
def synthetic_target(tmp_path_factory):
    """(config, model workdir) of a tiny global+face model trained on the synthetic subject."""
    config = synthetic_target_config("global,face")
    workdir = str(tmp_path_factory.mktemp("target"))
    train.train_and_evaluate(config, workdir, one_device_mesh())
    return config, workdir
