"""What the subject tracker (``tracking``) works with: its settings (``TrackerConfig``), its
per-frame record (``TrackStats``), what it remembers of each person (``Person``), what it judges of
each detection (``Candidate``), and the first frame's choice of subject."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from configs import default
from edn_jax.errors import EdnError
from edn_jax.pose.appearance import Appearance, person_box, person_size, torso_centre

SUBJECT_POLICIES = ("largest", "central", "point")
STATUSES = ("tracked", "filled", "not_detected", "other_person")  # "filled" is given by pose mode's gap filler


_POSE = default.get_config().pose  # the one home of the tracker's defaults and their meanings


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """The tracker's settings: the ``pose`` fields of the same names (configs/default.py says what each does)."""
    subject: str = _POSE.subject
    subject_point: tuple[float, float] = tuple(_POSE.subject_point)
    max_people: int = _POSE.max_people
    conf_threshold: float = _POSE.conf_threshold
    window_margin: float = _POSE.window_margin
    max_torso_shift: float = _POSE.max_torso_shift
    max_appearance_distance: float = _POSE.max_appearance_distance
    reacquire_after: int = _POSE.reacquire_after
    scan_every: int = _POSE.scan_every
    rotated_tries: bool = _POSE.rotated_tries

    @classmethod
    def from_config(cls, pose_cfg) -> "TrackerConfig":
        """The tracker's fields of a config's ``pose`` section."""
        values = {f.name: pose_cfg[f.name] for f in dataclasses.fields(cls)}
        return cls(**values | {"subject_point": tuple(values["subject_point"])})

    def validate(self) -> None:
        if self.subject not in SUBJECT_POLICIES:
            raise EdnError(f"pose.subject={self.subject!r} is not a subject policy", f"use one of {SUBJECT_POLICIES}")
        if self.max_people < 1:
            raise EdnError(f"pose.max_people={self.max_people} must be >= 1", "set it to the number of people to consider")
        if not 0.0 <= self.conf_threshold < 1.0:
            raise EdnError(f"pose.conf_threshold={self.conf_threshold} is outside [0, 1)",
                           f"use e.g. {_POSE.conf_threshold}")
        if self.window_margin <= 0 or self.max_torso_shift <= 0 or self.reacquire_after < 1:
            raise EdnError("pose.window_margin, pose.max_torso_shift and pose.reacquire_after must be positive",
                           f"use the defaults {_POSE.window_margin}, {_POSE.max_torso_shift} and "
                           f"{_POSE.reacquire_after}")
        if not 0.0 < self.max_appearance_distance <= 1.0:
            raise EdnError(f"pose.max_appearance_distance={self.max_appearance_distance} is outside (0, 1]",
                           f"use e.g. {_POSE.max_appearance_distance} (1.0 disables the colour check)")
        if not all(0.0 <= v <= 1.0 for v in self.subject_point):
            raise EdnError(f"pose.subject_point={self.subject_point} is outside the frame", "give (x, y) fractions in [0, 1]")
        if isinstance(self.scan_every, bool) or not isinstance(self.scan_every, int) or self.scan_every < 0:
            raise EdnError(f"pose.scan_every={self.scan_every!r} is not an integer >= 0",
                           f"use e.g. {_POSE.scan_every} (frames between scans for other people), 0 for never")

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
