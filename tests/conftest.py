"""Shared fixtures. Real footage is read from ../shared/data beside the checkout (never copied in)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
# Eight fake CPU devices for sharding tests; must be set before JAX is first imported.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


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
