"""Scripted scenes of several synthetic people with known identities, for testing and measuring the
subject tracker on the situations that break trackers: a subject displaced far in one frame, one
who leaves while someone else crosses and comes back elsewhere, two people crossing, a second
person coming gradually to stand behind the subject, and a subject who flips across the frame,
lands crouched in the shade and changes colour while someone else walks by.

Each person is the synthetic dancer (its own motion seed and clothes) moved along a scripted
path; person 0 is the subject. A frame is drawn back to front by depth, so a nearer person
occludes a farther one, and ``identity`` tells which person a tracked skeleton belongs to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.synthetic.motion import synthetic_keypoints
from edn_jax.synthetic.painter import render_synthetic_scene

HEIGHT, WIDTH = 360, 640
MAX_IDENTITY_DISTANCE = 0.25  # mean body point distance, in person sizes, to count as that person
MIN_IN_FRAME = 0.75           # of the subject's box inside the frame, to count as visible
MAX_OCCLUDED = 0.4            # of the subject's box behind nearer people's boxes, to count as visible


def _box(kps: np.ndarray) -> np.ndarray | None:
    box = layout.bounding_box(kps[layout.BODY], 0.0)
    return None if box is None else np.array(box, np.float64)


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    return _area(np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]))


@dataclasses.dataclass(frozen=True)
class Scene:
    name: str
    keypoints: np.ndarray         # [P, T, 137, 3] in frame pixels; person 0 is the subject; zero where absent
    appearances: tuple[int, ...]  # clothes of each person (painter.APPEARANCES)
    depth: np.ndarray             # [T, P]: larger is nearer the camera, drawn later
    height: int = HEIGHT
    width: int = WIDTH
    light: np.ndarray | None = None  # [T, P, 2, 3]: each person's colours times [0] plus [1] (None: as painted)

    @property
    def num_frames(self) -> int:
        return self.keypoints.shape[1]

    @property
    def subject_point(self) -> tuple[float, float]:
        """(x, y) of the subject's hips on the first frame, as fractions of the frame: for
        ``pose.subject="point"``, which picks it whatever the others' sizes."""
        hip = self.keypoints[0, 0, layout.B["MidHip"], :2]
        return float(hip[0] / self.width), float(hip[1] / self.height)

    def present(self, person: int, t: int) -> bool:
        return bool((self.keypoints[person, t, layout.BODY, 2] > 0).any())

    def frame(self, t: int) -> np.ndarray:
        order = [p for p in np.argsort(self.depth[t], kind="stable") if self.present(p, t)]
        return render_synthetic_scene([(self.keypoints[p, t], self.appearances[p]) for p in order],
                                      self.height, self.width,
                                      None if self.light is None else [self.light[t, p] for p in order])

    def frames(self) -> Iterator[np.ndarray]:
        return (self.frame(t) for t in range(self.num_frames))

    def subject_visible(self, t: int) -> bool:
        """Whether the subject is mostly in the frame and not mostly behind someone nearer."""
        if not self.present(0, t):
            return False
        box = _box(self.keypoints[0, t])
        frame = np.array([0, 0, self.width, self.height], np.float64)
        area = max(_area(box), 1.0)
        if _intersection(box, frame) < MIN_IN_FRAME * area:
            return False
        hidden = sum(_intersection(box, _box(self.keypoints[p, t])) for p in range(1, len(self.appearances))
                     if self.present(p, t) and self.depth[t, p] > self.depth[t, 0])
        return hidden <= MAX_OCCLUDED * area

    def identity(self, t: int, kps: np.ndarray, part=layout.BODY) -> int | None:
        """The person whose exact ``part`` points are nearest the tracked ones on frame t, or None if
        nobody's are within MAX_IDENTITY_DISTANCE of their size (or the part is missing)."""
        best, best_d = None, MAX_IDENTITY_DISTANCE
        for p in range(len(self.appearances)):
            if not self.present(p, t):
                continue
            exact = self.keypoints[p, t]
            both = (kps[part, 2] > 0) & (exact[part, 2] > 0)
            if not both.any():
                continue
            box = _box(exact)
            size = max(box[2] - box[0], box[3] - box[1])
            d = float(np.linalg.norm(kps[part][both, :2] - exact[part][both, :2], axis=1).mean()) / size
            if d < best_d:
                best, best_d = p, d
        return best


@dataclasses.dataclass(frozen=True)
class TrackScore:
    coverage: float                 # frames with the subject's skeleton / frames the subject is visible on
    swaps: list[tuple[int, object]]  # (frame, person or "face"): a skeleton or face that is not the subject's
    hand_mixes: list[int]           # frames where a hand is another person's


def score_track(scene: Scene, kps: np.ndarray) -> TrackScore:
    """Compares tracked keypoints [T, 137, 3] with the scene's known identities. A skeleton matching
    nobody (one mixing two people) counts as a swap; a face or hand matching nobody does not."""
    tracked = kps[:, layout.BODY, 2].max(1) > 0
    visible = np.array([scene.subject_visible(t) for t in range(scene.num_frames)])
    swaps, hands = [], []
    for t in np.flatnonzero(tracked):
        who = scene.identity(t, kps[t])
        if who != 0:
            swaps.append((int(t), who))
        if (kps[t, layout.FACE, 2] > 0).any() and scene.identity(t, kps[t], layout.FACE) not in (0, None):
            swaps.append((int(t), "face"))
        if any((kps[t, part, 2] > 0).any() and scene.identity(t, kps[t], part) not in (0, None)
               for part in (layout.LEFT_HAND, layout.RIGHT_HAND)):
            hands.append(int(t))
    return TrackScore(float((tracked & visible).sum() / max(visible.sum(), 1)), swaps, hands)


def _person(seed: int, num_frames: int, x: np.ndarray, foot: float, height: float) -> np.ndarray:
    """The dancer of ``seed`` with its hips at x[t] (fractions of the width, NaN: not in the scene),
    its feet at ``foot`` and its standing height ``height`` (fractions of the frame height)."""
    kps = synthetic_keypoints(seed, num_frames, HEIGHT, WIDTH)
    tall = np.median(kps[:, layout.BODY, 1].max(1) - kps[:, :, 1].min(1))
    scale = height * HEIGHT / tall
    feet = np.median(kps[:, layout.BODY, 1].max(1))
    out = np.zeros_like(kps)
    for t in range(num_frames):
        if np.isnan(x[t]):
            continue
        hip = kps[t, layout.B["MidHip"], 0]
        out[t, :, 0] = (kps[t, :, 0] - hip) * scale + x[t] * WIDTH
        out[t, :, 1] = (kps[t, :, 1] - feet) * scale + foot * HEIGHT
        out[t, :, 2] = kps[t, :, 2]
    return out


def _path(num_frames: int, *keys: tuple[int, float]) -> np.ndarray:
    """x per frame, linear between (frame, x) keys and NaN outside them (``None`` x: absent)."""
    x = np.full(num_frames, np.nan)
    for (t0, x0), (t1, x1) in zip(keys, keys[1:]):
        if x0 is None or x1 is None:
            continue
        x[t0:t1 + 1] = np.linspace(x0, x1, t1 - t0 + 1)
    return x


def _scene(name: str, people: list[tuple[int, np.ndarray, float, float, int]], depth: np.ndarray) -> Scene:
    n = len(people[0][1])
    kps = np.stack([_person(seed, n, x, foot, height) for seed, x, foot, height, _ in people])
    return Scene(name, kps.astype(np.float32), tuple(a for *_, a in people), depth)


def jump(num_frames: int = 60) -> Scene:
    """The subject is displaced across the frame between two frames; a smaller bystander stands far right."""
    half = num_frames // 2
    subject = np.where(np.arange(num_frames) < half, 0.3, 0.62)
    bystander = np.full(num_frames, 0.88)
    depth = np.tile([1.0, 0.0], (num_frames, 1))
    return _scene("jump", [(1, subject, 0.95, 0.72, 0), (2, bystander, 0.72, 0.45, 1)], depth)


def leave_and_return(num_frames: int = 110) -> Scene:
    """The subject walks out on the right, stays out for 40 frames while another person crosses the
    whole frame, and comes back in from the left."""
    subject = _path(num_frames, (0, 0.4), (20, 0.6), (30, 1.3), (70, None), (71, -0.3), (82, 0.3),
                    (num_frames - 1, 0.3))
    other = _path(num_frames, (34, -0.25), (68, 1.25))
    depth = np.tile([0.0, 1.0], (num_frames, 1))
    return _scene("leave_and_return", [(1, subject, 0.95, 0.72, 0), (3, other, 0.97, 0.74, 2)], depth)


def crossing(num_frames: int = 70) -> Scene:
    """The subject and another person walk across each other; the other passes in front."""
    subject = _path(num_frames, (0, 0.15), (num_frames - 1, 0.85))
    other = _path(num_frames, (0, 0.85), (num_frames - 1, 0.15))
    depth = np.tile([0.0, 1.0], (num_frames, 1))
    return _scene("crossing", [(1, subject, 0.9, 0.7, 0), (4, other, 0.96, 0.74, 3)], depth)


def behind(num_frames: int = 90) -> Scene:
    """A second person comes gradually to stand just behind the subject and stays, overlapping it."""
    subject = np.full(num_frames, 0.42)
    other = _path(num_frames, (0, 0.85), (num_frames // 2, 0.5), (num_frames - 1, 0.5))
    depth = np.tile([1.0, 0.0], (num_frames, 1))
    return _scene("behind", [(1, subject, 0.95, 0.74, 0), (5, other, 0.88, 0.7, 1)], depth)


SHADE = ((0.4, 0.46, 0.6), (30.0, 32.0, 40.0))  # a person's light in the shade: darker, bluer and duller


def _flipped(kps: np.ndarray, t0: int, t1: int, lift: float) -> np.ndarray:
    """``kps`` [T, 137, 3] with one somersault in the image plane from frame t0 to t1: each pose turned
    about its torso's centre by 0 to 360 degrees and raised by up to ``lift`` px on a parabola."""
    out = kps.copy()
    neck, hip = layout.B["Neck"], layout.B["MidHip"]
    for t in range(t0, t1 + 1):
        u = (t - t0) / (t1 - t0)
        a = 2 * np.pi * u
        centre = (kps[t, neck, :2] + kps[t, hip, :2]) / 2
        turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        present = kps[t, :, 2] > 0
        out[t, present, :2] = (kps[t, present, :2] - centre) @ turn.T + centre - [0.0, 4 * lift * u * (1 - u)]
    return out


_LEGS = {side: [layout.B[side + n] for n in ("Hip", "Knee", "Ankle")] for side in ("R", "L")}
_HIPS, _KNEES, _ANKLES = ([leg[i] for leg in _LEGS.values()] for i in range(3))
_FEET = [layout.B[side + n] for side in ("R", "L") for n in ("Ankle", "BigToe", "SmallToe", "Heel")]


def _crouched(kps: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``kps`` with each pose lowered into a crouch: the body above the hips dropped by ``depth[t]``
    of its hip-to-ankle height, the feet where they were, and each knee bent forward so the thigh
    and shin keep their lengths (limbs keep their widths, unlike a squashed figure)."""
    out = kps.copy()
    lowered = np.ones(kps.shape[1], bool)  # every point but the feet (they stay) and the knees (bent below)
    lowered[_FEET + _KNEES] = False
    for t, k in enumerate(depth):
        if k <= 0:
            continue
        drop = k * float(np.mean(kps[t, _ANKLES, 1] - kps[t, _HIPS, 1]))
        out[t, lowered & (kps[t, :, 2] > 0), 1] += drop
        facing = np.sign(kps[t, layout.B["Nose"], 0] - kps[t, layout.B["Neck"], 0]) or 1.0
        for hip, knee, ankle in _LEGS.values():
            h, a = out[t, hip, :2], out[t, ankle, :2]
            thigh = float(np.linalg.norm(kps[t, knee, :2] - kps[t, hip, :2]))
            shin = float(np.linalg.norm(kps[t, ankle, :2] - kps[t, knee, :2]))
            d = max(float(np.linalg.norm(a - h)), 1e-3)
            along = (thigh ** 2 - shin ** 2 + d ** 2) / (2 * d)  # two-link reach: the knee on both circles
            across = np.sqrt(max(thigh ** 2 - along ** 2, 0.0))
            u = (a - h) / d
            out[t, knee, :2] = h + along * u + facing * across * np.array([u[1], -u[0]]) * np.sign(u[1] or 1.0)
    return out


def flip_in_shade(num_frames: int = 150) -> Scene:
    """The subject dances on the left, somersaults to the right in 14 frames, lands crouched in the
    shade (darker and bluer from mid-air on), stays low, stands up and dances there; meanwhile a
    second person in other clothes walks right to left along the back, past the landing place,
    and leaves on the left."""
    take_off, landing = 50, 64
    subject_x = _path(num_frames, (0, 0.25), (take_off, 0.25), (landing, 0.62), (num_frames - 1, 0.7))
    walker_x = _path(num_frames, (10, 1.15), (130, -0.2))
    scene = _scene("flip_in_shade", [(1, subject_x, 0.95, 0.72, 0), (6, walker_x, 0.8, 0.5, 2)],
                   np.tile([1.0, 0.0], (num_frames, 1)))
    kps = scene.keypoints.copy()
    kps[0] = _flipped(kps[0], take_off, landing, lift=0.08 * HEIGHT)
    crouch = np.interp(np.arange(num_frames), [landing, landing + 20, landing + 36], [0.4, 0.4, 0.0], right=0.0)
    crouch[:landing] = 0.0
    kps[0] = _crouched(kps[0], crouch)
    shade = np.clip((np.arange(num_frames) - (take_off + landing) / 2) / 4, 0.0, 1.0)
    sun = np.array([np.ones(3), np.zeros(3)], np.float32)
    light = np.tile(sun, (num_frames, 2, 1, 1))
    light[:, 0] = sun + shade[:, None, None] * (np.array(SHADE, np.float32) - sun)
    return dataclasses.replace(scene, keypoints=kps, light=light)


SCENES = {"jump": jump, "leave_and_return": leave_and_return, "crossing": crossing, "behind": behind,
          "flip_in_shade": flip_in_shade}


def scene(name: str) -> Scene:
    if name not in SCENES:
        raise EdnError(f"unknown synthetic scene {name!r}", f"use one of {sorted(SCENES)}")
    return SCENES[name]()
