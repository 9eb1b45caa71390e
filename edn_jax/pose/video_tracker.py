"""Running the subject tracker (``tracking.py``) over a video's frames, with one detector or several.

With several detector instances, a few frames are detected at once in threads (MediaPipe
releases the GIL): each frame's first window comes from the subject a few frames back, while
every decision stays strictly in frame order.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from concurrent import futures

import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout, people, tracking
from edn_jax.pose.detector import PoseDetector


def track_video(detector: PoseDetector | Sequence[PoseDetector], frames: Iterable[np.ndarray],
                cfg: tracking.TrackerConfig, on_frame=None) -> tuple[np.ndarray, tracking.TrackStats]:
    """Keypoints [T, 137, 3] of the tracked subject; missing frames are all zero.

    ``detector`` may be a list of n detectors (same model and settings, e.g. one MediaPipe graph
    each). Then n frames are detected at once in threads: frame t is first searched in the window
    predicted from the subject as known after frame t - n instead of t - 1; whether that detection
    is the subject, and every retry or whole-frame search, is still decided frame by frame
    against the subject as of frame t - 1. Frame t always goes to detector t mod n, so each
    detector sees a fixed sequence of images: MediaPipe Holistic carries hand and face regions
    from one call to the next even in static mode, so the result depends on that sequence;
    detectors with a ``reset`` are reset first. The result depends on n, never on thread timing
    or earlier calls; with one detector this is the plain frame-by-frame tracker.
    """
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    for det in detectors:  # the result must not depend on what the detectors saw before this video
        if hasattr(det, "reset"):
            det.reset()
    tracker = tracking.SubjectTracker(detectors[0], cfg)
    out = []

    def finish(frame: np.ndarray, first) -> None:
        tracker.detector = detectors[len(out) % len(detectors)]  # retries and searches of this frame
        kps = tracker.update(frame, first)
        out.append(layout.empty_pose() if kps is None else kps)
        if on_frame is not None:
            on_frame(len(out), kps)

    if len(detectors) == 1:
        for frame in frames:
            finish(frame, tracking.NOT_GIVEN)
        return _stack(out), tracker.stats

    pending = collections.deque()  # (frame, future of its first detection or None), in frame order

    def finish_oldest() -> None:
        frame, ahead = pending.popleft()
        finish(frame, tracking.NOT_GIVEN if ahead is None else ahead.result())

    with futures.ThreadPoolExecutor(len(detectors), thread_name_prefix="pose-detect") as workers:
        try:
            for t, frame in enumerate(frames):
                # The tracker has finished every frame before the n - 1 pending ones, and detector
                # t mod n is idle: its last frame, t - n, is finished.
                window = tracker.follow_window(*frame.shape[:2], ahead=len(pending) + 1)
                ahead = None if window is None else workers.submit(
                    people.detect_in_window, detectors[t % len(detectors)], frame, window)
                pending.append((frame, ahead))
                if len(pending) == len(detectors):
                    finish_oldest()
            while pending:
                finish_oldest()
        finally:
            for _, ahead in pending:  # on an error: do not start detections nobody will read
                if ahead is not None:
                    ahead.cancel()
    return _stack(out), tracker.stats


def _stack(out: list[np.ndarray]) -> np.ndarray:
    if not out:
        raise EdnError("the video has no frames", "pass a video with at least one frame")
    return np.stack(out)
