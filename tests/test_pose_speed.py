"""The fast pose path: threaded decoding, several detectors on successive frames, detection on
shrunk frames. Each is checked against the plain path it replaces."""

import threading
import time
import types

import cv2
import numpy as np
import pytest

from helpers import real_video, scripted_person
from configs import default
from edn_jax.errors import EdnError
from edn_jax.pose import appearance, layout, pipeline, tracking, video_tracker
from edn_jax.runtime import video

H, W = 200, 256  # fake-scene frames: pixel (y, x) of frame t holds (x, y, t)


def _no_worker_threads():
    return not [t for t in threading.enumerate() if t.name.startswith(("prefetch", "pose-detect"))]


# --- video.prefetch -------------------------------------------------------------------------------

def test_prefetch_yields_the_plain_decoders_frames_in_order():
    path = real_video("two_people_cam01.mp4")
    plain = list(video.iter_frames(path, 12))
    threaded = list(video.prefetch(video.iter_frames(path, 12), depth=3))
    assert len(threaded) == len(plain) == 12
    assert all(np.array_equal(a, b) for a, b in zip(plain, threaded))
    assert _no_worker_threads()


def _counting_source(n, produced, closed, fail_at=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad item {i}")
            produced.append(i)
            yield i
    finally:
        closed.set()


def test_prefetch_stays_bounded_and_stops_on_early_exit():
    produced, closed = [], threading.Event()
    frames = video.prefetch(_counting_source(1000, produced, closed), depth=2)
    assert next(frames) == 0
    time.sleep(0.3)  # the producer fills the queue, then waits
    assert len(produced) <= 2 + 2  # queue slots + the item handed out + the one waiting to be put
    frames.close()  # what `break` in a for loop does
    assert closed.is_set() and _no_worker_threads()


def test_prefetch_reraises_a_producer_error_after_the_items_before_it():
    produced, closed = [], threading.Event()
    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item in video.prefetch(_counting_source(10, produced, closed, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2] and closed.is_set() and _no_worker_threads()


def test_prefetch_stops_when_the_consumer_fails():
    produced, closed = [], threading.Event()
    with pytest.raises(KeyError):
        for item in video.prefetch(_counting_source(1000, produced, closed)):
            if item == 5:
                raise KeyError("consumer bug")
    assert closed.is_set() and _no_worker_threads() and len(produced) < 1000


def test_real_video_decoding_stops_cleanly_on_early_exit():
    for i, _ in enumerate(video.prefetch(video.iter_frames(real_video("single_person_cam01.mp4")))):
        if i == 2:
            break
    assert _no_worker_threads()


def test_prefetch_of_an_unreadable_video_raises_the_decoders_error(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    for path in (str(tmp_path / "missing.mp4"), str(bad)):
        with pytest.raises(EdnError) as err:
            next(video.prefetch(video.iter_frames(path)))
        assert path in str(err.value)
    assert _no_worker_threads()


def test_shrunk_decoding_equals_resizing_the_full_frames():
    path = real_video("single_person_cam01.mp4")
    full = list(video.iter_frames(path, 3))
    small = list(video.iter_frames(path, 3, max_height=960))
    assert video.scaled_size(1920, 1080, 960) == (960, 540)
    assert video.scaled_size(1920, 1080, 0) == video.scaled_size(1920, 1080, 4000) == (1920, 1080)
    for a, b in zip(full, small):
        assert b.shape == (960, 540, 3)
        # Shrinking before the BGR->RGB swap (cheaper) gives the same pixels as after it.
        assert np.array_equal(b, cv2.resize(a, (540, 960), interpolation=cv2.INTER_AREA))


# --- several detectors on successive frames --------------------------------------------------------

def _person(seed, frames, scale=1.0, dx=0.0, dy=0.0):
    return scripted_person(seed, frames, H, W, scale, dx, dy)


class _SceneDetector:
    """Finds the largest scripted person whose torso centre is visible in the image it is given.

    Frames encode their pixel coordinates and index, so a crop reveals where it came from and a
    masked-out person is hidden: a crop-invariant stand-in for MediaPipe."""

    def __init__(self, scene, stats, fail_at=None):
        self.scene, self.stats, self.fail_at = scene, stats, fail_at

    def detect(self, image):
        with self.stats["lock"]:
            self.stats["active"] += 1
            self.stats["max_active"] = max(self.stats["max_active"], self.stats["active"])
        try:
            time.sleep(0.01)
            h, w = image.shape[:2]
            img = image.astype(np.int64)
            x0 = int(np.bincount(((img[..., 0] - np.arange(w)) % 256).ravel()).argmax())
            y0 = int(np.bincount(((img[..., 1] - np.arange(h)[:, None]) % 256).ravel()).argmax())
            t = int(np.bincount(img[..., 2].ravel()).argmax())
            if t == self.fail_at:
                raise RuntimeError(f"detector failed on frame {t}")
            seen = []
            for person in self.scene[t]:
                cx, cy = (tracking.torso_centre(person, 0.3) - (x0, y0)).astype(int)
                if 0 <= cx < w and 0 <= cy < h and tuple(img[cy, cx]) == ((x0 + cx) % 256, (y0 + cy) % 256, t):
                    seen.append(person)
            if not seen:
                return None
            kps = max(seen, key=lambda p: appearance.person_size(p, 0.3)).copy()
            present = kps[:, 2] > 0
            kps[present, :2] -= (x0, y0)
            return kps
        finally:
            with self.stats["lock"]:
                self.stats["active"] -= 1


def _scene():
    """Subject a (large) with a short gap (frames 8-10) and a long one (20-36, past reacquire_after),
    and a smaller person b standing elsewhere throughout."""
    n = 45
    a, b = _person(1, n, 0.8, -40, 20), _person(2, n, 0.45, 120, 90)
    scene = [[b[t]] + ([] if 8 <= t <= 10 or 20 <= t <= 36 else [a[t]]) for t in range(n)]
    y, x = np.mgrid[0:H, 0:W]
    frames = [np.stack([x, y, np.full_like(x, t)], -1).astype(np.uint8) for t in range(n)]
    return scene, frames, a


@pytest.mark.parametrize("workers", [2, 3])
def test_several_detectors_track_exactly_like_one_on_a_crop_invariant_detector(workers):
    scene, frames, a = _scene()
    cfg = tracking.TrackerConfig(max_appearance_distance=1.0)  # the encoded frames have no real colours
    stats = {"lock": threading.Lock(), "active": 0, "max_active": 0}
    one, one_stats = video_tracker.track_video(_SceneDetector(scene, stats), frames, cfg)
    assert stats["max_active"] == 1
    many, many_stats = video_tracker.track_video([_SceneDetector(scene, stats) for _ in range(workers)], frames, cfg)
    assert stats["max_active"] == workers  # frames really were detected concurrently
    np.testing.assert_array_equal(many, one)
    assert many_stats == one_stats
    found = one[:, layout.BODY, 2].max(1) > 0
    expected = np.array([not (8 <= t <= 10 or 20 <= t <= 36) for t in range(len(frames))])
    np.testing.assert_array_equal(found, expected)  # the subject, never the bystander
    np.testing.assert_allclose(one[found], a[found], atol=1e-4)
    assert _no_worker_threads()


def test_a_detector_error_stops_the_threads_and_reaches_the_caller():
    scene, frames, _ = _scene()
    stats = {"lock": threading.Lock(), "active": 0, "max_active": 0}
    detectors = [_SceneDetector(scene, stats, fail_at=13) for _ in range(2)]
    with pytest.raises(RuntimeError, match="frame 13"):
        video_tracker.track_video(detectors, frames, tracking.TrackerConfig(max_appearance_distance=1.0))
    assert _no_worker_threads()


# --- MediaPipe on real frames ----------------------------------------------------------------------

def _pose_cfg(**overrides):
    cfg = default.get_config().pose
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_threaded_tracking_of_real_video_is_repeatable_and_close_to_frame_by_frame():
    path, n = real_video("single_person_cam01.mp4"), 16
    with pipeline.open_detectors(_pose_cfg(detect_threads=2)) as detectors:
        plain, _ = video_tracker.track_video(detectors[0], video.iter_frames(path, n), pipeline.tracker_config(_pose_cfg()))
        serial, _ = pipeline.detect_video_keypoints(detectors[:1], path, _pose_cfg(detect_threads=1, detect_height=0), n)
        first, _ = pipeline.detect_video_keypoints(detectors, path, _pose_cfg(detect_threads=2, detect_height=0), n)
        again, _ = pipeline.detect_video_keypoints(detectors[::-1], path, _pose_cfg(detect_threads=2, detect_height=0), n)
    np.testing.assert_array_equal(serial, plain)  # one thread, full size: the old path, bit for bit
    np.testing.assert_array_equal(first, again)  # independent of thread timing and of which graph ran
    body = layout.BODY
    assert (first[:, body, 2].max(1) > 0).all() and (serial[:, body, 2].max(1) > 0).all()
    both = (first[:, body, 2] > 0) & (serial[:, body, 2] > 0)
    dist = np.linalg.norm(first[:, body, :2] - serial[:, body, :2], axis=-1)[both]
    # MediaPipe moves points by a few pixels whenever its crop changes at all (even by 1 %).
    assert np.median(dist) < 8.0 and np.percentile(dist, 90) < 30.0, (np.median(dist), np.percentile(dist, 90))


@pytest.mark.parametrize("name", ["single_person_cam02.mp4", "two_people_cam01.mp4"])
def test_detection_on_shrunk_frames_lands_on_the_full_resolution_points(name):
    from edn_jax.pose import detector

    height = default.get_config().pose.detect_height or 960
    frames = list(video.iter_frames(real_video(name), 4))
    small = list(video.iter_frames(real_video(name), 4, max_height=height))
    scale = np.array([frames[0].shape[1] / small[0].shape[1], frames[0].shape[0] / small[0].shape[0]])
    with detector.MediaPipeHolisticDetector(min_visibility=0.3) as det:
        full = np.stack([det.detect(f) for f in frames])
        shrunk = np.stack([det.detect(f) for f in small])
    shrunk[..., :2] *= scale
    for part, tolerance in (("body", 12.0), ("left_hand", 12.0), ("right_hand", 12.0)):
        sl = layout.PARTS[part]
        both = (full[:, sl, 2] > 0) & (shrunk[:, sl, 2] > 0)
        if part == "body":
            assert both.any(1).all()
        if both.any():
            dist = np.linalg.norm(full[:, sl, :2] - shrunk[:, sl, :2], axis=-1)[both]
            assert np.median(dist) < tolerance, (part, np.median(dist))


@pytest.mark.parametrize("key,value", [("detect_height", -1), ("detect_height", 100), ("detect_threads", 0),
                                       ("detect_threads", 99)])
def test_bad_detect_settings_fail_up_front_in_one_line(key, value):
    config = default.get_config()
    config.pose[key] = value
    with pytest.raises(EdnError, match=f"pose.{key}") as err:
        pipeline.validate_pose_config(config)
    assert "\n" not in str(err.value) and ";" in str(err.value)


@pytest.mark.parametrize("height,threads", [(960.0, 2), (True, 2), (960, 2.0), (960, None)])
def test_detect_settings_must_be_integers(height, threads):
    with pytest.raises(EdnError, match="integer"):
        pipeline.validate_detect_settings(types.SimpleNamespace(detect_height=height, detect_threads=threads))
