"""Choosing one subject in multi-person footage and following it without swaps.

The detectors see at most one person per call, so several people are found by
detecting, masking the found person out, and detecting again. The subject is
chosen once on the first frame with a person (largest, most central, or nearest a
given point) and then followed by detecting inside a window around its last
position. A detection is accepted only if its torso lies where the subject's
torso was, relative to the subject's size; anything else (the person walking in
front, a bystander) is rejected and the frame is left missing for the gap filler,
so identities are never swapped. After a long loss the whole frame is searched,
still accepting only a person near the last known position.

With several detector instances, ``track_video`` detects a few frames at once in
threads (MediaPipe releases the GIL): each frame's first window comes from the
subject a few frames back, while acceptance stays strictly in frame order.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures

import cv2
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.pose.detector import PoseDetector

B = layout.B
TORSO = (B["Neck"], B["RShoulder"], B["LShoulder"], B["MidHip"], B["RHip"], B["LHip"])
SUBJECT_POLICIES = ("largest", "central", "point")
_NOT_GIVEN = object()  # SubjectTracker.update: no detection was made ahead of time


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    subject: str = "largest"           # how the subject is chosen on its first frame
    subject_point: tuple[float, float] = (0.5, 0.5)  # (x, y) as fractions of the frame, for "point"
    max_people: int = 3                # people enumerated when choosing / re-acquiring
    conf_threshold: float = 0.3        # a point counts as present above this
    window_margin: float = 0.5         # search window = subject box grown by this fraction of its size per side
    max_torso_shift: float = 0.15      # accepted torso move per frame, in subject sizes (grows for 3 lost frames)
    max_appearance_distance: float = 0.65  # Bhattacharyya distance of torso colours; 1.0 turns the check off
    reacquire_after: int = 15          # frames lost before searching the whole frame

    def validate(self) -> None:
        if self.subject not in SUBJECT_POLICIES:
            raise EdnError(f"pose.subject={self.subject!r} is not a subject policy", f"use one of {SUBJECT_POLICIES}")
        if self.max_people < 1:
            raise EdnError(f"pose.max_people={self.max_people} must be >= 1", "set it to the number of people to consider")
        if not 0.0 <= self.conf_threshold < 1.0:
            raise EdnError(f"pose.conf_threshold={self.conf_threshold} is outside [0, 1)", "use e.g. 0.3")
        if self.window_margin <= 0 or self.max_torso_shift <= 0 or self.reacquire_after < 1:
            raise EdnError("pose.window_margin, pose.max_torso_shift and pose.reacquire_after must be positive",
                           "use the defaults 0.5, 0.15 and 15")
        if not 0.0 < self.max_appearance_distance <= 1.0:
            raise EdnError(f"pose.max_appearance_distance={self.max_appearance_distance} is outside (0, 1]",
                           "use e.g. 0.65 (1.0 disables the colour check)")
        if not all(0.0 <= v <= 1.0 for v in self.subject_point):
            raise EdnError(f"pose.subject_point={self.subject_point} is outside the frame", "give (x, y) fractions in [0, 1]")


def person_box(kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """(x0, y0, x1, y1) of a person's present body points."""
    box = layout.bounding_box(kps[layout.BODY], threshold)
    return None if box is None else np.array(box, np.float32)


def person_size(kps: np.ndarray, threshold: float) -> float:
    """A scale of the person robust to pose: the larger side of its body box."""
    box = person_box(kps, threshold)
    return 0.0 if box is None else float(max(box[2] - box[0], box[3] - box[1]))


def torso_centre(kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """Mean of the present torso points, else of any present body point."""
    for idx in (list(TORSO), list(range(layout.NUM_BODY))):
        mask = kps[idx, 2] > threshold
        if mask.any():
            return kps[idx][mask, :2].mean(0)
    return None


def pose_distance(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    """Mean distance of the body points present in both poses, in units of ``a``'s size.

    Two people whose torsos overlap (one walking past the other) still differ in
    where their limbs, heads and feet are, so this ranks candidates reliably.
    """
    both = (a[layout.BODY, 2] > threshold) & (b[layout.BODY, 2] > threshold)
    size = person_size(a, threshold)
    if not both.any() or size <= 0:
        return float("inf")
    return float(np.linalg.norm(a[layout.BODY][both, :2] - b[layout.BODY][both, :2], axis=1).mean() / size)


def select_subject(people: list[np.ndarray], height: int, width: int, cfg: TrackerConfig) -> int:
    """Index of the subject among the people found on one frame."""
    if cfg.subject == "largest":
        return int(np.argmax([person_size(p, cfg.conf_threshold) for p in people]))
    target = (np.array([width, height], np.float32) * 0.5 if cfg.subject == "central"
              else np.array(cfg.subject_point, np.float32) * np.array([width, height], np.float32))
    boxes = [person_box(p, cfg.conf_threshold) for p in people]
    return int(np.argmin([np.linalg.norm((b[:2] + b[2:]) / 2 - target) for b in boxes]))


def is_same_person(track: np.ndarray, candidate: np.ndarray, cfg: TrackerConfig, frames_since: int = 1) -> bool:
    """Whether ``candidate`` continues ``track``: torso within a bound that grows with time lost."""
    c0, c1 = torso_centre(track, cfg.conf_threshold), torso_centre(candidate, cfg.conf_threshold)
    size0, size1 = person_size(track, cfg.conf_threshold), person_size(candidate, cfg.conf_threshold)
    if c0 is None or c1 is None or size0 <= 0 or size1 <= 0:
        return False
    if not 0.5 <= size1 / size0 <= 2.0:
        return False
    allowed = cfg.max_torso_shift * min(frames_since, 3)
    return float(np.linalg.norm(c1 - c0)) <= allowed * size0


def torso_colours(frame: np.ndarray, kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """Normalised hue-saturation histogram of the torso: cheap identity evidence."""
    idx = [i for i in TORSO if kps[i, 2] > threshold]
    if len(idx) < 3:
        return None
    xy = kps[idx, :2]
    lo, hi = xy.min(0), xy.max(0)
    lo, hi = lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo)  # stay inside the torso
    h, w = frame.shape[:2]
    x0, y0 = np.clip(lo.astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(hi).astype(int), 0, [w, h])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    hsv = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).astype(np.float32)
    return hist / max(float(hist.sum()), 1.0)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def choose_subject(people: list[np.ndarray], last: np.ndarray | None, accepts, height: int, width: int,
                   cfg: TrackerConfig) -> tuple[np.ndarray | None, int]:
    """The one identity rule: with no subject yet, pick one by policy; otherwise the accepted
    candidate whose pose is nearest the subject's. Returns (choice or None, candidates refused)."""
    if not people:
        return None, 0
    if last is None:
        return people[select_subject(people, height, width, cfg)], 0
    matches = [p for p in people if accepts(p)]
    choice = min(matches, key=lambda p: pose_distance(last, p, cfg.conf_threshold), default=None)
    return choice, len(people) - len(matches)


def _masked(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with ``box`` painted in the frame's mean colour."""
    out = frame.copy()
    h, w = frame.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    out[y0:y1, x0:x1] = np.array(cv2.mean(frame)[:frame.shape[2]]).astype(frame.dtype)  # cv2: ~40x numpy's mean
    return out


def _grow(box: np.ndarray, margin: float, height: int, width: int) -> np.ndarray:
    size = np.maximum(box[2:] - box[:2], 1.0)
    grown = np.concatenate([box[:2] - margin * size, box[2:] + margin * size])
    return np.clip(grown, 0, [width, height, width, height]).astype(np.float32)


def detect_people(detector: PoseDetector, frame: np.ndarray, max_people: int, threshold: float) -> list[np.ndarray]:
    """Everyone the detector finds, by detecting and masking out repeatedly."""
    people, image = [], frame
    for _ in range(max_people):
        kps = detector.detect(image)
        box = None if kps is None else person_box(kps, threshold)
        if box is None:
            break
        people.append(kps)
        image = _masked(image, _grow(box, 0.1, *frame.shape[:2]))
    return people


def detect_in_window(detector: PoseDetector, frame: np.ndarray, window: np.ndarray) -> np.ndarray | None:
    """Detects inside a window of the frame; keypoints come back in frame pixels."""
    x0, y0, x1, y1 = (int(v) for v in np.round(window))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    kps = detector.detect(np.ascontiguousarray(frame[y0:y1, x0:x1]))
    if kps is None:
        return None
    present = kps[:, 2] > 0
    kps[present, 0] += x0
    kps[present, 1] += y0
    return kps


@dataclasses.dataclass
class TrackStats:
    frames: int = 0
    tracked: int = 0
    rejected: int = 0       # detections refused as another person
    reacquired: int = 0


class SubjectTracker:
    """Follows one subject through frames fed in order; see the module docstring."""

    def __init__(self, detector: PoseDetector, cfg: TrackerConfig):
        cfg.validate()
        self.detector, self.cfg = detector, cfg
        self.last: np.ndarray | None = None  # last accepted keypoints
        self.colours: np.ndarray | None = None  # running torso colour histogram of the subject
        self.lost = 0                        # frames since the last accepted detection
        self.stats = TrackStats()

    def _looks_like_subject(self, frame: np.ndarray, kps: np.ndarray) -> bool:
        if self.colours is None or self.cfg.max_appearance_distance >= 1.0:
            return True
        colours = torso_colours(frame, kps, self.cfg.conf_threshold)
        return colours is None or colour_distance(self.colours, colours) <= self.cfg.max_appearance_distance

    def _accept(self, frame: np.ndarray, kps: np.ndarray) -> None:
        self.last, self.lost = kps, 0
        colours = torso_colours(frame, kps, self.cfg.conf_threshold)
        if colours is not None:  # slow running average: follows lighting, not a passer-by
            self.colours = colours if self.colours is None else 0.9 * self.colours + 0.1 * colours
        self.stats.tracked += 1

    def _matches(self, frame: np.ndarray, kps: np.ndarray) -> bool:
        return is_same_person(self.last, kps, self.cfg, self.lost + 1) and self._looks_like_subject(frame, kps)

    def _search_whole_frame(self, frame: np.ndarray) -> np.ndarray | None:
        people = detect_people(self.detector, frame, self.cfg.max_people, self.cfg.conf_threshold)
        choice, refused = choose_subject(people, self.last, lambda p: self._matches(frame, p),
                                         *frame.shape[:2], self.cfg)
        self.stats.rejected += refused
        if choice is not None and self.last is not None:
            self.stats.reacquired += 1
        return choice

    def needs_search(self) -> bool:
        """Whether the next frame is searched whole (no subject yet, or lost for long)."""
        return self.last is None or self.lost >= self.cfg.reacquire_after

    def follow_window(self, height: int, width: int) -> np.ndarray | None:
        """The window the next frame is searched in first, or None when it is searched whole."""
        if self.needs_search():
            return None
        return _grow(person_box(self.last, self.cfg.conf_threshold), self.cfg.window_margin, height, width)

    def _follow(self, frame: np.ndarray, first) -> np.ndarray | None:
        h, w = frame.shape[:2]
        box = person_box(self.last, self.cfg.conf_threshold)
        for attempt, margin in enumerate((self.cfg.window_margin, self.cfg.window_margin / 4)):
            if attempt == 0 and first is not _NOT_GIVEN:
                kps = first  # detected ahead of time, in an earlier follow_window
            else:
                kps = detect_in_window(self.detector, frame, _grow(box, margin, h, w))
            if kps is None:
                continue
            if self._matches(frame, kps):
                return kps
            self.stats.rejected += 1
        return None

    def update(self, frame: np.ndarray, first=_NOT_GIVEN) -> np.ndarray | None:
        """The subject's keypoints on this frame, or None (missing) if not found.

        ``first``, if given, is ``detect_in_window`` on this frame in a ``follow_window`` computed
        ahead of time (None if nobody was found there); it replaces the first detection when the
        subject is followed and is ignored when the frame is searched whole.
        """
        self.stats.frames += 1
        if self.needs_search():
            kps = self._search_whole_frame(frame)
        else:
            kps = self._follow(frame, first)
        if kps is None:
            self.lost += 1
            return None
        self._accept(frame, kps)
        return kps


def track_video(detector: PoseDetector | Sequence[PoseDetector], frames: Iterable[np.ndarray], cfg: TrackerConfig,
                on_frame=None) -> tuple[np.ndarray, TrackStats]:
    """Keypoints [T, 137, 3] of the tracked subject; missing frames are all zero.

    ``detector`` may be a list of n detectors (same model and settings, e.g. one MediaPipe graph
    each). Then n frames are detected at once in threads: frame t is first searched in the window
    around the subject as known after frame t - n instead of t - 1 (the window's margin covers the
    extra frames of motion); whether that detection is the subject, and every retry or whole-frame
    search, is still decided frame by frame against the subject as of frame t - 1. Frame t always
    goes to detector t mod n, so each detector sees a fixed sequence of images: MediaPipe Holistic
    carries hand and face regions from one call to the next even in static mode, so the result
    depends on that sequence; detectors with a ``reset`` are reset first. The result depends on n,
    never on thread timing or earlier calls; with one detector this is the plain frame-by-frame
    tracker.
    """
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    for det in detectors:  # the result must not depend on what the detectors saw before this video
        if hasattr(det, "reset"):
            det.reset()
    tracker = SubjectTracker(detectors[0], cfg)
    out = []

    def finish(frame: np.ndarray, first) -> None:
        tracker.detector = detectors[len(out) % len(detectors)]  # retries and searches of this frame
        kps = tracker.update(frame, first)
        out.append(layout.empty_pose() if kps is None else kps)
        if on_frame is not None:
            on_frame(len(out), kps)

    if len(detectors) == 1:
        for frame in frames:
            finish(frame, _NOT_GIVEN)
        return _stack(out), tracker.stats

    pending = collections.deque()  # (frame, future of its first detection or None), in frame order

    def finish_oldest() -> None:
        frame, ahead = pending.popleft()
        finish(frame, _NOT_GIVEN if ahead is None else ahead.result())

    with futures.ThreadPoolExecutor(len(detectors), thread_name_prefix="pose-detect") as workers:
        try:
            for t, frame in enumerate(frames):
                # The tracker has finished every frame before the n - 1 pending ones, and detector
                # t mod n is idle: its last frame, t - n, is finished.
                window = tracker.follow_window(*frame.shape[:2])
                ahead = None if window is None else workers.submit(
                    detect_in_window, detectors[t % len(detectors)], frame, window)
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


def track_candidates(candidates: Iterable[list[np.ndarray]], height: int, width: int,
                     cfg: TrackerConfig) -> Iterator[np.ndarray | None]:
    """The same subject choice and identity rule over per-frame people lists (e.g. OpenPose JSON)."""
    cfg.validate()
    last, lost = None, 0
    for people in candidates:
        people = [p for p in people if person_box(p, cfg.conf_threshold) is not None]
        choice, _ = choose_subject(people, last, lambda p: is_same_person(last, p, cfg, lost + 1), height, width, cfg)
        if choice is None:
            lost += 1
        else:
            last, lost = choice, 0
        yield choice
