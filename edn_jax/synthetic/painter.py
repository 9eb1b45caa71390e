"""Drawing the synthetic subject: a frame from 137 canonical keypoints alone, on a static stage.

Any canonical pose can be rendered, and every keypoint lies on the drawn figure. The
same person comes in a few sets of clothes (``APPEARANCES``; 0 is the canonical subject).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.synthetic.motion import (CAMERA_TILT, CHEST_DEPTH, HEAD_A, HEAD_B, HIP_DEPTH, HIP_HALF, NOSE_BUMP,
                                      SHOULDER_HALF, TORSO_LEN, check_frame_size, horizon_y, synthetic_keypoints)

# Limb radii (units).
UPPER_ARM_R, FOREARM_R, FINGER_R = 0.034, 0.028, 0.009
THIGH_R, SHIN_R, SHOE_R, NECK_R = 0.055, 0.042, 0.022, 0.032

# Drawing.
TURN_THRESHOLD = 0.3      # |face offset| / head half width above which one side is far
HAIR_CAP_V = 0.42         # hairline height above the head centre, in units of HEAD_B
_SHIFT = 4                # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


@dataclasses.dataclass(frozen=True)
class _Palette:
    skin: tuple[int, int, int] = (236, 188, 156)
    hair: tuple[int, int, int] = (72, 46, 32)
    shirt: tuple[int, int, int] = (198, 52, 58)
    sleeve: tuple[int, int, int] = (238, 226, 204)
    trousers: tuple[int, int, int] = (46, 66, 132)
    shoes: tuple[int, int, int] = (38, 34, 36)
    lips: tuple[int, int, int] = (186, 88, 90)


# The same person in different clothes; index 0 is the canonical subject.
APPEARANCES = (
    _Palette(),
    _Palette(shirt=(46, 140, 88), sleeve=(128, 128, 136), trousers=(40, 40, 46)),
    _Palette(shirt=(52, 96, 190), sleeve=(245, 245, 245), trousers=(180, 150, 100)),
    _Palette(shirt=(236, 196, 48), sleeve=(40, 92, 70), trousers=(112, 70, 44)),
)
EYE_WHITE, PUPIL, MOUTH_INSIDE = (250, 250, 248), (36, 28, 30), (96, 30, 36)
NOSE_LINE = (196, 140, 112)
WALL_TOP, WALL_BOTTOM = (188, 204, 218), (226, 230, 234)
FLOOR_FAR, FLOOR_NEAR = (170, 134, 96), (142, 106, 72)
PLANK_LINE, BASEBOARD, SHADOW = (126, 94, 64), (236, 236, 230), (112, 84, 58)
WINDOW_FRAME, WINDOW_GLASS = (248, 248, 244), (150, 196, 236)
PICTURE_FRAME, PICTURE_CANVAS, PICTURE_SUN = (92, 60, 40), (120, 170, 120), (244, 210, 90)


@dataclasses.dataclass(frozen=True)
class SyntheticClip:
    """A rendered clip and the exact keypoints it was drawn from."""

    frames: np.ndarray      # uint8 [T, H, W, 3], RGB
    keypoints: np.ndarray   # float32 [T, 137, 3], pixels of these frames
    fps: float



def _palette(appearance: int) -> _Palette:
    if not isinstance(appearance, (int, np.integer)) or not 0 <= appearance < len(APPEARANCES):
        raise EdnError(f"synthetic appearance must be an integer in 0..{len(APPEARANCES) - 1}, "
                       f"got {appearance!r}", "pick one of the built-in appearances")
    return APPEARANCES[appearance]


# ---------------------------------------------------------------------------------
# Rendering from keypoints.

def _fx(p) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _poly(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32)


def _capsule(img: np.ndarray, a, b, radius: float, colour) -> None:
    cv2.line(img, _fx(a), _fx(b), colour, max(1, int(round(2 * radius))), cv2.LINE_AA, _SHIFT)


def _ellipse(img: np.ndarray, centre, axes, angle_deg: float, colour, start: float = 0, end: float = 360) -> None:
    cv2.ellipse(img, _fx(centre), _fx(np.maximum(axes, 0.5)), angle_deg, start, end, colour, -1, cv2.LINE_AA, _SHIFT)


def _fill(img: np.ndarray, pts: np.ndarray, colour) -> None:
    cv2.fillConvexPoly(img, _poly(cv2.convexHull(np.asarray(pts, np.float32))[:, 0]), colour, cv2.LINE_AA, _SHIFT)


@functools.lru_cache(maxsize=8)
def _background(height: int, width: int) -> np.ndarray:
    """The static stage: wall, window, picture, baseboard and a perspective floor."""
    horizon = horizon_y(height, width)
    h = int(round(horizon))
    img = np.empty((height, width, 3), np.uint8)
    rows = np.arange(height, dtype=np.float64)[:, None]
    wall = np.clip(rows / max(h, 1), 0, 1)
    floor = np.clip((rows - h) / max(height - h, 1), 0, 1)
    lerp = lambda c0, c1, f: np.asarray(c0) * (1 - f) + np.asarray(c1) * f  # noqa: E731
    img[:] = np.where(rows < h, lerp(WALL_TOP, WALL_BOTTOM, wall), lerp(FLOOR_FAR, FLOOR_NEAR, floor))[:, None, :]
    line = max(1, int(round(height / 256)))
    vanish = (width / 2, horizon)
    for k in np.linspace(-2, 2, 9):
        cv2.line(img, _fx(vanish), _fx((width / 2 + k * width, height)), PLANK_LINE, line, cv2.LINE_AA, _SHIFT)
    cv2.rectangle(img, _fx((0, horizon - 0.025 * height)), _fx((width, horizon)), BASEBOARD, -1, cv2.LINE_AA, _SHIFT)
    # A window on the left and a framed picture on the right, both on the wall.
    x0, x1, y0, y1 = 0.06 * width, 0.28 * width, 0.12 * horizon, 0.72 * horizon
    border = 0.02 * min(height, width)
    cv2.rectangle(img, _fx((x0, y0)), _fx((x1, y1)), WINDOW_FRAME, -1, cv2.LINE_AA, _SHIFT)
    cv2.rectangle(img, _fx((x0 + border, y0 + border)), _fx((x1 - border, y1 - border)), WINDOW_GLASS, -1,
                  cv2.LINE_AA, _SHIFT)
    cv2.line(img, _fx(((x0 + x1) / 2, y0)), _fx(((x0 + x1) / 2, y1)), WINDOW_FRAME, max(1, int(border)),
             cv2.LINE_AA, _SHIFT)
    cv2.line(img, _fx((x0, (y0 + y1) / 2)), _fx((x1, (y0 + y1) / 2)), WINDOW_FRAME, max(1, int(border)),
             cv2.LINE_AA, _SHIFT)
    x0, x1, y0, y1 = 0.72 * width, 0.92 * width, 0.22 * horizon, 0.6 * horizon
    cv2.rectangle(img, _fx((x0, y0)), _fx((x1, y1)), PICTURE_FRAME, -1, cv2.LINE_AA, _SHIFT)
    cv2.rectangle(img, _fx((x0 + border, y0 + border)), _fx((x1 - border, y1 - border)), PICTURE_CANVAS, -1,
                  cv2.LINE_AA, _SHIFT)
    cv2.circle(img, _fx((0.6 * x0 + 0.4 * x1, 0.6 * y0 + 0.4 * y1)), int(0.15 * (y1 - y0) * _ONE), PICTURE_SUN,
               -1, cv2.LINE_AA, _SHIFT)
    img.setflags(write=False)
    return img


class _Painter:
    """Draws the figure part by part, in back-to-front order, from 2D keypoints only."""

    def __init__(self, img: np.ndarray, keypoints: np.ndarray, palette: _Palette):
        self.img, self.xy, self.c = img, keypoints[:, :2], palette
        self.ok = (keypoints[:, 2] > 0) & np.isfinite(keypoints).all(axis=1)
        self.ppu = 0.0
        neck, mid = layout.B["Neck"], layout.B["MidHip"]
        if self.ok[neck] and self.ok[mid]:
            self.ppu = float(np.linalg.norm(self.xy[neck] - self.xy[mid])) / (TORSO_LEN * math.cos(CAMERA_TILT))

    def has(self, *idx: int) -> bool:
        return bool(self.ok[list(idx)].all())

    def at(self, name: str) -> np.ndarray:
        return self.xy[layout.B[name]]

    def limb(self, i: int, j: int, radius: float, colour) -> None:
        if self.has(i, j):
            _capsule(self.img, self.xy[i], self.xy[j], radius * self.ppu, colour)

    def draw(self) -> None:
        if self.ppu <= 0:
            return
        facing = self.facing()
        far = "L" if facing > TURN_THRESHOLD else "R" if facing < -TURN_THRESHOLD else None
        self.shadow()
        if far:
            self.arm(far)
        for side in ("RL" if far != "L" else "LR"):
            self.leg(side)
        self.torso()
        self.head(facing, far)
        for side in "RL":
            if side != far:
                self.arm(side)

    def facing(self) -> float:
        """Nose offset along the ear axis / its frontal maximum: the sign of the head's yaw."""
        b = layout.B
        if not self.has(b["Nose"], b["REar"], b["LEar"]):
            return 0.0
        axis = self.at("LEar") - self.at("REar")
        offset = (self.at("Nose") - (self.at("LEar") + self.at("REar")) / 2).dot(axis) / (np.linalg.norm(axis) + 1e-9)
        return float(np.clip(offset / (HEAD_A * (1 + NOSE_BUMP) * self.ppu), -1, 1))

    def shadow(self) -> None:
        feet = [layout.B[s + n] for s in "RL" for n in ("Heel", "BigToe", "SmallToe")]
        if self.has(layout.B["MidHip"], *feet):
            y = self.xy[feet, 1].max() - 0.02 * self.ppu
            _ellipse(self.img, (self.at("MidHip")[0], y), (0.22 * self.ppu, 0.04 * self.ppu), 0, SHADOW)

    def leg(self, side: str) -> None:
        b, c = layout.B, self.c
        self.limb(b[side + "Hip"], b[side + "Knee"], THIGH_R, c.trousers)
        self.limb(b[side + "Knee"], b[side + "Ankle"], SHIN_R, c.trousers)
        foot = [b[side + n] for n in ("Ankle", "Heel", "BigToe", "SmallToe")]
        if self.has(*foot):
            _fill(self.img, self.xy[foot], c.shoes)
            for i, j in ((0, 1), (1, 2), (1, 3), (2, 3), (0, 2)):
                self.limb(foot[i], foot[j], SHOE_R, c.shoes)

    def torso(self) -> None:
        """Shirt as a quad whose width follows the yaw implied by the shoulder width."""
        b, c, ppu = layout.B, self.c, self.ppu
        self.limb(b["RHip"], b["LHip"], THIGH_R, c.trousers)
        corners = []
        for centre, r, l, half, depth, pad in (("Neck", "RShoulder", "LShoulder", SHOULDER_HALF, CHEST_DEPTH, 0.0),
                                               ("MidHip", "RHip", "LHip", HIP_HALF, HIP_DEPTH, THIGH_R)):
            if not self.has(b[r], b[l]):
                return
            across = self.at(l) - self.at(r)
            seen = np.linalg.norm(across) / 2
            cos_yaw = min(1.0, seen / (half * ppu))
            width = math.hypot(seen, depth * ppu * math.sqrt(1 - cos_yaw ** 2)) + pad * ppu
            unit = across / (2 * seen + 1e-9)
            corners += [self.at(centre) - unit * width, self.at(centre) + unit * width]
        down = self.at("MidHip") - self.at("Neck")
        corners[:2] = [p - UPPER_ARM_R * ppu * down / np.linalg.norm(down) for p in corners[:2]]
        corners[2:] = [p + 0.06 * down for p in corners[2:]]
        _fill(self.img, np.array(corners), c.shirt)
        for s in ("RShoulder", "LShoulder"):
            _ellipse(self.img, self.at(s), (1.05 * UPPER_ARM_R * ppu,) * 2, 0, c.shirt)

    def arm(self, side: str) -> None:
        b, c = layout.B, self.c
        self.limb(b[side + "Shoulder"], b[side + "Elbow"], UPPER_ARM_R, c.shirt)
        self.limb(b[side + "Elbow"], b[side + "Wrist"], FOREARM_R, c.sleeve)
        hand = layout.LEFT_HAND if side == "L" else layout.RIGHT_HAND
        idx = np.arange(hand.start, hand.stop)
        palm = idx[[0, 1, 5, 9, 13, 17]]
        if self.has(*palm):
            _fill(self.img, self.xy[palm], c.skin)
        for finger in layout.HAND_FINGERS:
            chain = [0] + list(finger) if finger[0] == 1 else list(finger)
            for i, j in zip(chain[:-1], chain[1:]):
                self.limb(idx[i], idx[j], FINGER_R, c.skin)

    def head(self, facing: float, far: str | None) -> None:
        b, c, ppu = layout.B, self.c, self.ppu
        ears = (b["REar"], b["LEar"])
        if not self.has(*ears):
            return
        centre = self.xy[list(ears)].mean(0)
        axis = self.at("LEar") - self.at("REar")
        axis = axis / (np.linalg.norm(axis) + 1e-9)
        up = np.array([axis[1], -axis[0]])
        angle = math.degrees(math.atan2(axis[1], axis[0]))
        a, h = HEAD_A * ppu, HEAD_B * ppu
        back = -facing * 0.18 * a * axis
        _capsule(self.img, self.at("Neck"), centre, NECK_R * ppu, c.skin)
        _ellipse(self.img, centre + back + 0.25 * h * up, (1.08 * a, 0.82 * h), angle, c.hair)
        near_ear = {"L": "REar", "R": "LEar"}.get(far)
        for ear in ("REar", "LEar"):
            if ear != near_ear:
                _ellipse(self.img, self.at(ear), (0.2 * a, 0.3 * h), angle, c.skin)
        _ellipse(self.img, centre, (a, h), angle, c.skin)
        _ellipse(self.img, centre + 1.6 * back + HAIR_CAP_V * h * up, (1.06 * a, 0.64 * h), angle, c.hair, 180, 360)
        # Seen from the side, hair covers the back of the head down to the nape.
        width = 0.6 * max(0.0, abs(facing) - 0.15) * a
        if width >= 0.5:
            _ellipse(self.img, centre + math.copysign(a - width, -facing) * axis + 0.15 * h * up,
                     (width, 0.8 * h), angle, c.hair)
        if near_ear:
            _ellipse(self.img, self.at(near_ear), (0.2 * a, 0.3 * h), angle, c.skin)
        self.face(h)

    def face(self, head_h: float) -> None:
        """Eyes, pupils, brows, nose and lips, each drawn from its own face points."""
        img, c = self.img, self.c

        def points(group) -> np.ndarray | None:
            idx = [layout.FACE.start + i for i in group]
            return self.xy[idx] if self.has(*idx) else None

        def polyline(pts: np.ndarray | None, colour, width: float) -> None:
            if pts is not None:
                cv2.polylines(img, [_poly(pts)], False, colour, max(1, int(round(width * head_h))), cv2.LINE_AA,
                              _SHIFT)

        for eye, pupil in ((layout.FACE_RIGHT_EYE, layout.FACE_RIGHT_PUPIL),
                           (layout.FACE_LEFT_EYE, layout.FACE_LEFT_PUPIL)):
            ring = points(eye)
            if ring is None:
                continue
            _fill(img, ring, EYE_WHITE)
            centre = points([pupil])
            if centre is not None:
                opening = np.linalg.norm((ring[1] + ring[2]) - (ring[4] + ring[5])) / 2
                radius = min(0.5 * opening, 0.3 * np.linalg.norm(ring[3] - ring[0]))
                cv2.circle(img, _fx(centre[0]), int(radius * _ONE), PUPIL, -1, cv2.LINE_AA, _SHIFT)
        polyline(points(layout.FACE_RIGHT_BROW), c.hair, 0.08)
        polyline(points(layout.FACE_LEFT_BROW), c.hair, 0.08)
        polyline(points(list(layout.FACE_NOSE_BRIDGE)[-2:] + list(layout.FACE_NOSE_BOTTOM)), NOSE_LINE, 0.04)
        for lips, colour in ((layout.FACE_OUTER_LIPS, c.lips), (layout.FACE_INNER_LIPS, MOUTH_INSIDE)):
            pts = points(lips)
            if pts is not None:
                cv2.fillPoly(img, [_poly(pts)], colour, cv2.LINE_AA, _SHIFT)


def render_synthetic_frame(keypoints: np.ndarray, height: int, width: int, appearance: int = 0) -> np.ndarray:
    """Render one RGB uint8 frame of the figure posed by `keypoints` (the canonical layout).

    Parts with a missing point are left out; without a neck and mid-hip (which size
    the figure) only the background is drawn, so an empty pose renders the stage.
    """
    return render_synthetic_scene([(keypoints, appearance)], height, width)


def render_synthetic_scene(people: list[tuple[np.ndarray, int]], height: int, width: int,
                           light: list[np.ndarray] | None = None) -> np.ndarray:
    """One RGB uint8 frame of several figures, each ``(keypoints, appearance)``, drawn back to front
    in list order (a later person occludes an earlier one) on the same stage. ``light``, if given,
    holds each person's light as [2, 3] (or None: as painted): their colours become ``colour * light[0] + light[1]``
    (e.g. a dull bluish shade: less red than blue, and some grey from the sky)."""
    check_frame_size(height, width)
    img = _background(height, width).copy()
    for k, (keypoints, appearance) in enumerate(people):
        kp = np.asarray(keypoints, np.float64)
        if kp.shape != (layout.NUM_KEYPOINTS, 3):
            raise EdnError(f"synthetic keypoints must have shape ({layout.NUM_KEYPOINTS}, 3), got {kp.shape}",
                           "pass one pose in the canonical layout per person")
        lit = None if light is None else light[k]
        gain, offset = (np.ones(3), np.zeros(3)) if lit is None else np.asarray(lit, np.float64)
        if np.all(gain == 1.0) and np.all(offset == 0.0):
            _Painter(img, kp, _palette(appearance)).draw()
            continue
        drawn = img.copy()
        _Painter(drawn, kp, _palette(appearance)).draw()
        person = (drawn != img).any(axis=-1)
        img[person] = np.clip(drawn[person] * gain + offset + 0.5, 0, 255).astype(np.uint8)
    return img


def synthetic_clip(seed: int = 0, num_frames: int = 120, height: int = 256, width: int = 256,
                   fps: float = 30.0, appearance: int = 0) -> SyntheticClip:
    """The synthetic subject dancing for ``num_frames`` frames; ``seed`` picks the motion."""
    _palette(appearance)
    keypoints = synthetic_keypoints(seed, num_frames, height, width, fps)
    frames = np.stack([render_synthetic_frame(kp, height, width, appearance) for kp in keypoints])
    return SyntheticClip(frames=frames, keypoints=keypoints, fps=float(fps))
