"""What the subject tracker (``tracking``) works with: its settings (``TrackerConfig``), its
per-frame record (``TrackStats``), what it remembers of each person (``Person``), what it judges of
each detection (``Candidate``), and the first frame's choice of subject."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose.appearance import Appearance, person_box, person_size, torso_centre

SUBJECT_POLICIES = ("largest", "central", "point")
STATUSES = ("tracked", "filled", "not_detected", "other_person")  # "filled" is given by pose mode's gap filler


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    subject: str = "largest"           # how the subject is chosen on its first frame
    subject_point: tuple[float, float] = (0.5, 0.5)  # (x, y) as fractions of the frame, for "point"
    max_people: int = 3                # people enumerated in a whole-frame search
    conf_threshold: float = 0.3        # a point counts as present above this
    window_margin: float = 0.5         # search window = predicted box grown by this fraction of its size per side
    max_torso_shift: float = 0.15      # torso move from the prediction that counts as near, in subject sizes per
                                       # frame lost (at most 3)
    max_appearance_distance: float = 0.65  # clothes colour distance still the subject; 1.0 turns identity off
    reacquire_after: int = 15          # frames lost after which only the whole frame is searched
    scan_every: int = 60               # frames between whole-frame scans for other people (0: never)
    rotated_tries: bool = True         # search the window turned when nobody is found upright

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
        if isinstance(self.scan_every, bool) or not isinstance(self.scan_every, int) or self.scan_every < 0:
            raise EdnError(f"pose.scan_every={self.scan_every!r} is not an integer >= 0",
                           "use e.g. 60 (frames between scans for other people), 0 for never")

    @property
    def uses_appearance(self) -> bool:
        return self.max_appearance_distance < 1.0


def select_subject(candidates: list[np.ndarray], height: int, width: int, cfg: TrackerConfig) -> int:
    """Index of the subject among the people found on its first frame."""
    if cfg.subject == "largest":
        return int(np.argmax([person_size(p, cfg.conf_threshold) for p in candidates]))
    target = (np.array([width, height], np.float32) * 0.5 if cfg.subject == "central"
              else np.array(cfg.subject_point, np.float32) * np.array([width, height], np.float32))
    boxes = [person_box(p, cfg.conf_threshold) for p in candidates]
    return int(np.argmin([np.linalg.norm((b[:2] + b[2:]) / 2 - target) for b in boxes]))


@dataclasses.dataclass
class TrackStats:
    frames: int = 0
    tracked: int = 0
    rejected: int = 0        # candidates refused as another person
    reacquired: int = 0      # frames the subject was found by identity away from where it was predicted
    rotated: int = 0         # frames the subject was found only on a turned window
    parts_dropped: int = 0   # faces and hands removed as another person's
    status: list = dataclasses.field(default_factory=list)  # per frame, one of STATUSES
    reasons: list = dataclasses.field(default_factory=list)  # per frame, why the subject is missing ("" if tracked)

    def status_counts(self) -> dict[str, int]:
        return {s: self.status.count(s) for s in STATUSES if s in self.status}


@dataclasses.dataclass
class Person:
    """A person the tracker knows: where it was last seen, its clothes, its recent torso positions."""

    kps: np.ndarray
    frame: int                              # the frame it was last seen on
    looks: Appearance | None
    history: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=3))

    def seen(self, kps: np.ndarray, frame: int, threshold: float) -> None:
        self.kps, self.frame = kps, frame
        centre = torso_centre(kps, threshold)
        if centre is not None:
            self.history.append((frame, centre))

    def velocity(self) -> np.ndarray:
        """Torso pixels per frame over the last few sightings (zero after a gap of more than 5 frames)."""
        if len(self.history) < 2:
            return np.zeros(2, np.float32)
        (f0, c0), (f1, c1) = self.history[0], self.history[-1]
        if f1 - f0 > 5:
            return np.zeros(2, np.float32)
        return (c1 - c0) / (f1 - f0)


@dataclasses.dataclass
class Candidate:
    """One detection on the frame being tracked, and the tracker's verdict on it."""

    kps: np.ndarray
    looks: Appearance | None
    d_subject: float | None = None
    d_tone: float | None = None  # appearance.relative_distance to the subject's model
    near: bool = False
    verdict: str = ""         # "subject" or why not
    why: str = ""             # the verdict with its figures, for the frame's reason
