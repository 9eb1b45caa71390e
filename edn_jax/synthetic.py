"""A built-in synthetic subject: a cartoon person dancing on a stage, with exact keypoints.

It is the demo input and the main test fixture, and a generator is trained on it, so
it must look like the videos the project is made for: one person, fixed clothes, a
static background, full-body framing, moving left/right and near/far (nearer is lower
and larger), turning, stepping and waving. The pose is built in 3D (body units of
standing height), projected with a slightly downward-looking orthographic camera and
placed on the floor with a perspective scale. The frame is then drawn from the 137
canonical keypoints alone, so any canonical pose can be rendered and every keypoint
lies on the drawn figure.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout

# ---------------------------------------------------------------------------------
# Body proportions, in units of standing height (Y up from the floor, X towards the
# subject's left = image right when facing the camera, Z towards the camera).
HIP_Y = 0.52
TORSO_LEN = 0.29          # mid-hip to neck
SHOULDER_HALF = 0.11
HIP_HALF = 0.065
CHEST_DEPTH = 0.075       # half depth of the chest: the torso's width seen from the side
HIP_DEPTH = 0.07
THIGH_LEN = 0.245
SHIN_LEN = 0.245
ANKLE_H = 0.03            # ankle above the sole
HEEL_BACK = 0.025
TOE_LEN = 0.11
UPPER_ARM_LEN = 0.17
FOREARM_LEN = 0.15
HAND_LEN = 0.10           # wrist to middle fingertip, drawn unforeshortened
NECK_TO_HEAD = 0.115      # neck point to head centre
HEAD_A, HEAD_B = 0.062, 0.075  # head ellipsoid semi-axes: half width (= half depth), half height

# Limb radii (units).
UPPER_ARM_R, FOREARM_R, FINGER_R = 0.034, 0.028, 0.009
THIGH_R, SHIN_R, SHOE_R, NECK_R = 0.055, 0.042, 0.022, 0.032

# Camera: orthographic, looking down by CAMERA_TILT; its height (in units) is the
# horizon's height on every standing figure, which ties scale to floor position.
CAMERA_TILT = math.radians(11.0)
CAMERA_HEIGHT = 0.6
# Extents of every reachable pose around the ground point under the mid-hip, in
# projected units (measured over many seeds, plus a margin); they size the stage.
POSE_TOP, POSE_BOTTOM, POSE_HALF_WIDTH = 1.2, 0.05, 0.6
MARGIN = 0.03             # of the frame size, kept free on every side
FAR_SCALE = 0.6           # figure scale at the farthest depth relative to the nearest
MAX_FACE_YAW = math.radians(60)  # beyond it the far eye would vanish behind the nose

# Face template: (u, v) on the front of the head, u in [-1, 1] from the subject's
# right to left, v in [-1, 1] from the top of the head to the chin.
EYE_U, EYE_V, EYE_HALF_W, EYE_HALF_H = 0.36, -0.05, 0.13, 0.065
BROW_V = -0.3
NOSE_TIP_V, NOSE_BOTTOM_V = 0.3, 0.36
MOUTH_V, MOUTH_HALF_W = 0.62, 0.3
CHIN_V = 0.95
NOSE_BUMP = 0.3           # nose tip protrusion, in units of HEAD_A

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


# ---------------------------------------------------------------------------------
# Argument checks.

def _check_frame_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 32:
            raise EdnError(f"synthetic {name} must be an integer >= 32, got {value!r}",
                           f"pass a {name} of at least 32 pixels")


def _check_clip_args(seed: int, num_frames: int, height: int, width: int, fps: float) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EdnError(f"synthetic seed must be an integer >= 0, got {seed!r}", "pass a non-negative integer seed")
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise EdnError(f"synthetic num_frames must be an integer >= 1, got {num_frames!r}",
                       "ask for at least one frame")
    _check_frame_size(height, width)
    if not isinstance(fps, (int, float, np.number)) or not fps > 0:
        raise EdnError(f"synthetic fps must be > 0, got {fps!r}", "pass a positive frame rate such as 30")


def _palette(appearance: int) -> _Palette:
    if not isinstance(appearance, (int, np.integer)) or not 0 <= appearance < len(APPEARANCES):
        raise EdnError(f"synthetic appearance must be an integer in 0..{len(APPEARANCES) - 1}, "
                       f"got {appearance!r}", "pick one of the built-in appearances")
    return APPEARANCES[appearance]


# ---------------------------------------------------------------------------------
# Stage geometry shared by pose placement and background drawing.

def _near_scale(height: int, width: int) -> float:
    """Pixels per unit at the nearest depth: as large as the frame allows."""
    return min((height - 2 * MARGIN * height) / (POSE_TOP + POSE_BOTTOM),
               (width - 2 * MARGIN * width) / (2 * POSE_HALF_WIDTH))


def _horizon_y(height: int, width: int) -> float:
    """Row of the horizon: the nearest pose stands on the bottom margin.

    The horizon is at camera height on every standing figure, so a figure's feet are
    ``CAMERA_HEIGHT * scale`` below it: nearer (larger) figures stand lower.
    """
    return height * (1 - MARGIN) - (CAMERA_HEIGHT + POSE_BOTTOM) * _near_scale(height, width)


# ---------------------------------------------------------------------------------
# Motion: smooth, seed-dependent sums of sinusoids.

def _rot_x(a: float) -> np.ndarray:  # pitch: +a tips "up" towards the camera (nod)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:  # yaw: +a turns the front towards image right
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:  # roll in the image plane
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _motion(seed: int, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame pose parameters (angles in radians) for times ``t`` in seconds.

    Each channel is a dominant sinusoid plus a weaker one, normalised to [-1, 1];
    the slow channels (depth, yaw) run through more than half a cycle in four seconds,
    so even a short clip walks near and far and turns.
    """
    rng = np.random.default_rng(seed)

    def wave(lo_hz: float, hi_hz: float, detail: float = 0.25) -> np.ndarray:
        freq = rng.uniform(lo_hz, hi_hz, 2) * np.array([1.0, rng.uniform(1.6, 2.6)])
        phase = rng.uniform(0, 2 * np.pi, 2)
        amp = np.array([1.0, detail * rng.uniform(0.6, 1.4)])
        return (amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])).sum(0) / amp.sum()

    deg = np.radians
    m = {
        "depth": 0.5 + 0.5 * wave(0.16, 0.3),
        "lateral": wave(0.08, 0.25),
        "yaw": deg(55) * wave(0.15, 0.3, detail=0.12),
        "twist": deg(8) * wave(0.4, 0.9),
        "lean": deg(6) * wave(0.3, 0.8),
        "head_yaw": deg(8) * wave(0.3, 0.8),
        "head_pitch": deg(8) * wave(0.3, 0.8),
        "head_roll": deg(8) * wave(0.3, 0.8),
    }
    # The face stays visible: its total yaw saturates smoothly at MAX_FACE_YAW.
    chest = m["yaw"] + m["twist"]
    face = chest + m["head_yaw"]
    m["head_yaw"] = face / (1 + (np.abs(face) / MAX_FACE_YAW) ** 4) ** 0.25 - chest
    cadence, step_phase = rng.uniform(0.8, 1.4), rng.uniform(0, 2 * np.pi)
    step = np.sin(2 * np.pi * cadence * t + step_phase)
    intensity = 0.55 + 0.45 * wave(0.1, 0.3)
    m["lift_R"] = intensity * np.maximum(step, 0) ** 1.5
    m["lift_L"] = intensity * np.maximum(-step, 0) ** 1.5
    m["bounce"] = deg(6) * (1 - np.cos(4 * np.pi * cadence * t + 2 * step_phase))
    for side in "RL":
        m["abduct_leg_" + side] = deg(4) + deg(4) * (1 + wave(0.1, 0.4))
        m["abduct_" + side] = deg(75) + deg(65) * wave(0.25, 0.8)
        m["flex_" + side] = deg(20) + deg(30) * wave(0.25, 0.8)
        m["elbow_" + side] = deg(55) + deg(50) * wave(0.3, 0.9)
        m["bend_plane_" + side] = deg(30) + deg(30) * wave(0.2, 0.6)
        m["wrist_" + side] = deg(20) * wave(0.3, 1.0)
        m["curl_" + side] = 0.35 + 0.35 * wave(0.3, 1.0)
        m["spread_" + side] = 1.0 + 0.3 * wave(0.3, 1.0)
    m["mouth"] = (0.5 + 0.5 * wave(0.5, 1.8)) ** 2
    m["brow"] = wave(0.2, 0.6)
    m["gaze_u"], m["gaze_v"] = wave(0.2, 0.7), wave(0.2, 0.7)
    period, offset = rng.uniform(2.5, 4.5), rng.uniform(0, 4.5)
    since_blink = np.abs((t - offset + period / 2) % period - period / 2)
    m["eye_open"] = 1 - 0.9 * np.exp(-((since_blink / 0.06) ** 2))
    return m


# ---------------------------------------------------------------------------------
# Pose construction.

def _face_template(mouth: float, brow: float, gaze_u: float, gaze_v: float, eye_open: float) -> np.ndarray:
    """The 70 face points as (u, v, nose protrusion) in iBUG order plus pupils."""
    pts = np.zeros((layout.NUM_FACE, 3))
    a = np.pi * np.arange(17) / 16
    pts[layout.FACE_JAW, 0] = -0.92 * np.cos(a)
    pts[layout.FACE_JAW, 1] = 0.05 + (CHIN_V - 0.05) * np.sin(a)
    arch = np.sin(np.pi * np.arange(5) / 4)
    brow_v = BROW_V - 0.05 * brow - 0.06 * arch
    pts[layout.FACE_RIGHT_BROW, 0] = np.linspace(-0.62, -0.14, 5)
    pts[layout.FACE_LEFT_BROW, 0] = np.linspace(0.14, 0.62, 5)
    pts[layout.FACE_RIGHT_BROW, 1] = pts[layout.FACE_LEFT_BROW, 1] = brow_v
    pts[layout.FACE_NOSE_BRIDGE, 1] = np.linspace(-0.12, NOSE_TIP_V, 4)
    pts[layout.FACE_NOSE_BRIDGE, 2] = np.linspace(0.05, 1.0, 4) * NOSE_BUMP
    pts[layout.FACE_NOSE_BOTTOM, 0] = np.linspace(-0.16, 0.16, 5)
    pts[layout.FACE_NOSE_BOTTOM, 1] = NOSE_BOTTOM_V + np.array([-0.02, 0.0, 0.01, 0.0, -0.02])
    pts[layout.FACE_NOSE_BOTTOM, 2] = np.array([0.2, 0.45, 0.55, 0.45, 0.2]) * NOSE_BUMP
    # Eye contour, starting at the image-left corner and going over the top.
    ring_u = np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3]) * EYE_HALF_W
    ring_v = np.array([0, -1, -1, 0, 1, 1]) * EYE_HALF_H * eye_open
    for eye, u0 in ((layout.FACE_RIGHT_EYE, -EYE_U), (layout.FACE_LEFT_EYE, EYE_U)):
        pts[eye, 0], pts[eye, 1] = u0 + ring_u, EYE_V + ring_v
    # Lips: corners, then the top from right to left and the bottom from left to right.
    gap = 0.14 * mouth
    w = MOUTH_HALF_W
    outer_u = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1, 0.6, 0.25, 0, -0.25, -0.6]) * w
    outer_v = MOUTH_V + np.array([0, -0.05, -0.08, -0.06, -0.08, -0.05, 0,
                                  0.06 + gap, 0.09 + gap, 0.1 + gap, 0.09 + gap, 0.06 + gap])
    inner_u = np.array([-0.85, -0.35, 0, 0.35, 0.85, 0.35, 0, -0.35]) * w
    inner_v = MOUTH_V + np.array([0, -0.015, -0.01, -0.015, 0, 0.015 + gap, 0.02 + gap, 0.015 + gap])
    pts[layout.FACE_OUTER_LIPS, 0], pts[layout.FACE_OUTER_LIPS, 1] = outer_u, outer_v
    pts[layout.FACE_INNER_LIPS, 0], pts[layout.FACE_INNER_LIPS, 1] = inner_u, inner_v
    pts[layout.FACE_OUTER_LIPS, 2] = pts[layout.FACE_INNER_LIPS, 2] = 0.05
    for pupil, u0 in ((layout.FACE_RIGHT_PUPIL, -EYE_U), (layout.FACE_LEFT_PUPIL, EYE_U)):
        pts[pupil] = (u0 + 0.3 * EYE_HALF_W * gaze_u, EYE_V + 0.3 * EYE_HALF_H * eye_open * gaze_v, 0)
    return pts


def _head_points(uvb: np.ndarray) -> np.ndarray:
    """Face (u, v, bump) template -> 3D points on the front of the head ellipsoid."""
    u, v, bump = uvb.T
    z = np.sqrt(np.clip(1 - u ** 2 - v ** 2, 0, None)) + bump
    return np.stack([u * HEAD_A, -v * HEAD_B, z * HEAD_A], axis=1)


def _limb_dir(side: int, abduct: float, flex: float) -> np.ndarray:
    """Unit vector of a limb hanging down, swung out by ``abduct`` and forward by ``flex``."""
    return np.array([side * math.sin(abduct), -math.cos(abduct) * math.cos(flex),
                     abs(math.cos(abduct)) * math.sin(flex)])


def _pose3d(m: dict[str, float]) -> np.ndarray:
    """Body (25) and face (70) points in 3D units for one frame's parameters."""
    pts = np.zeros((layout.NUM_BODY + layout.NUM_FACE, 3))
    b = layout.B
    r_hips = _rot_y(m["yaw"])
    r_chest = _rot_y(m["yaw"] + m["twist"]) @ _rot_z(m["lean"])
    pelvis = np.array([0.0, HIP_Y, 0.0])
    pts[b["MidHip"]] = pelvis
    pts[b["Neck"]] = neck = pelvis + r_chest @ (0, TORSO_LEN, 0)
    for s, side in ((-1, "R"), (1, "L")):
        hip = pelvis + r_hips @ (s * HIP_HALF, 0, 0)
        lift = m["lift_" + side]
        hip_flex, knee = math.radians(45) * lift, math.radians(80) * lift + m["bounce"]
        thigh = _limb_dir(s, m["abduct_leg_" + side], hip_flex)
        shin = _limb_dir(s, m["abduct_leg_" + side], hip_flex - knee)
        knee_pt = hip + r_hips @ thigh * THIGH_LEN
        ankle = knee_pt + r_hips @ shin * SHIN_LEN
        toe_out, pitch = math.radians(12), math.radians(25) * lift
        fwd = r_hips @ (s * math.sin(toe_out) * math.cos(pitch), -math.sin(pitch), math.cos(toe_out) * math.cos(pitch))
        down = r_hips @ (0, -math.cos(pitch), -math.sin(pitch))
        out = r_hips @ (s * math.cos(toe_out), 0, -math.sin(toe_out))
        sole = ankle + down * ANKLE_H
        pts[b[side + "Hip"]], pts[b[side + "Knee"]], pts[b[side + "Ankle"]] = hip, knee_pt, ankle
        pts[b[side + "Heel"]] = sole - fwd * HEEL_BACK
        pts[b[side + "BigToe"]] = sole + fwd * TOE_LEN - out * 0.012
        pts[b[side + "SmallToe"]] = sole + fwd * TOE_LEN * 0.8 + out * 0.032

        shoulder = neck + r_chest @ (s * SHOULDER_HALF, 0, 0)
        upper = _limb_dir(s, m["abduct_" + side], m["flex_" + side])
        plane = m["bend_plane_" + side]
        hint = np.array([-0.2 * s, math.sin(plane), math.cos(plane)])  # inwards, up, forwards
        normal = hint - hint.dot(upper) * upper
        normal /= np.linalg.norm(normal)
        fore = math.cos(m["elbow_" + side]) * upper + math.sin(m["elbow_" + side]) * normal
        elbow = shoulder + r_chest @ upper * UPPER_ARM_LEN
        pts[b[side + "Shoulder"]], pts[b[side + "Elbow"]] = shoulder, elbow
        pts[b[side + "Wrist"]] = elbow + r_chest @ fore * FOREARM_LEN

    r_head = r_chest @ _rot_y(m["head_yaw"]) @ _rot_x(m["head_pitch"]) @ _rot_z(m["head_roll"])
    centre = neck + r_head @ (0, NECK_TO_HEAD, 0)
    face = centre + _head_points(_face_template(m["mouth"], m["brow"], m["gaze_u"], m["gaze_v"],
                                                m["eye_open"])) @ r_head.T
    pts[layout.NUM_BODY:] = face
    pts[b["Nose"]] = face[layout.FACE_NOSE_BRIDGE[-1]]
    pts[b["REye"]], pts[b["LEye"]] = face[layout.FACE_RIGHT_PUPIL], face[layout.FACE_LEFT_PUPIL]
    pts[b["REar"]] = centre + r_head @ (-HEAD_A, 0, 0)
    pts[b["LEar"]] = centre + r_head @ (HEAD_A, 0, 0)
    # Stand on the floor: the lowest foot point touches it.
    feet = [b[n] for n in ("RHeel", "RBigToe", "RSmallToe", "LHeel", "LBigToe", "LSmallToe")]
    pts[:, 1] -= pts[feet, 1].min()
    return pts


def _project(pts: np.ndarray) -> np.ndarray:
    """3D units -> 2D units (x right, y down) through the tilted orthographic camera."""
    c, s = math.cos(CAMERA_TILT), math.sin(CAMERA_TILT)
    return np.stack([pts[:, 0], -pts[:, 1] * c + pts[:, 2] * s], axis=1)


# Hand template, for a hand pointing along +a with its thumb towards +p, in units of
# HAND_LEN: each finger's base (a, p), direction (degrees towards the thumb) and the
# lengths of its three segments.
HAND_FINGER_SHAPES = (
    ((0.10, 0.15), 50.0, (0.20, 0.16, 0.14)),   # thumb: CMC, MCP, IP, tip
    ((0.50, 0.17), 8.0, (0.22, 0.14, 0.11)),    # index: MCP, PIP, DIP, tip
    ((0.52, 0.05), 0.0, (0.24, 0.15, 0.11)),    # middle
    ((0.50, -0.07), -8.0, (0.22, 0.14, 0.10)),  # ring
    ((0.45, -0.18), -16.0, (0.17, 0.11, 0.09)),  # pinky
)
CURL_SHORTEN = (0.2, 0.45, 0.6)  # how much a full curl foreshortens each segment


def _hand2d(elbow: np.ndarray, wrist: np.ndarray, thumb_side: int, length: float,
            flex: float, curl: float, spread: float) -> np.ndarray:
    """The 21 hand points in 2D, palm towards the camera, continuing the forearm."""
    d = wrist - elbow
    d = d + np.array([0.0, 0.25 * np.linalg.norm(d) + 1e-3 * length])  # hang a little
    ang = math.atan2(d[1], d[0]) + flex
    a = np.array([math.cos(ang), math.sin(ang)])
    p = thumb_side * np.array([-a[1], a[0]])
    pts = np.zeros((layout.NUM_HAND, 2))
    pts[0] = wrist
    for finger, ((ba, bp), deg, segs) in zip(layout.HAND_FINGERS, HAND_FINGER_SHAPES):
        pos = wrist + length * (ba * a + bp * p)
        thumb_fold = 1 - 0.5 * curl if finger[0] == 1 else 1.0  # a curling hand tucks its thumb in
        theta = math.radians(deg * spread * thumb_fold)
        step = math.cos(theta) * a + math.sin(theta) * p
        pts[finger[0]] = pos
        for k, (seg, shorten) in enumerate(zip(segs, CURL_SHORTEN)):
            pos = pos + step * seg * length * (1 - shorten * curl)
            pts[finger[k + 1]] = pos
    return pts


def synthetic_keypoints(seed: int, num_frames: int, height: int, width: int, fps: float = 30.0) -> np.ndarray:
    """Exact canonical keypoints [T,137,3] without rendering (cheap)."""
    _check_clip_args(seed, num_frames, height, width, fps)
    t = np.arange(num_frames) / float(fps)
    motion = _motion(int(seed), t)
    s_near = _near_scale(height, width)
    horizon = _horizon_y(height, width)
    out = np.zeros((num_frames, layout.NUM_KEYPOINTS, 3), np.float32)
    for i in range(num_frames):
        m = {k: float(v[i]) for k, v in motion.items()}
        scale = s_near * (FAR_SCALE + (1 - FAR_SCALE) * m["depth"])
        room = max(0.0, width / 2 - MARGIN * width - POSE_HALF_WIDTH * scale)
        origin = np.array([width / 2 + m["lateral"] * room, horizon + CAMERA_HEIGHT * scale])
        xy = origin + scale * _project(_pose3d(m))
        kp = out[i]
        kp[: xy.shape[0], :2] = xy
        b = layout.B
        for side, hand, thumb in (("L", layout.LEFT_HAND, -1), ("R", layout.RIGHT_HAND, 1)):
            kp[hand, :2] = _hand2d(xy[b[side + "Elbow"]], xy[b[side + "Wrist"]], thumb, HAND_LEN * scale,
                                   m["wrist_" + side], m["curl_" + side], m["spread_" + side])
        kp[:, 2] = 1.0
    return out


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
    horizon = _horizon_y(height, width)
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
    _check_frame_size(height, width)
    palette = _palette(appearance)
    kp = np.asarray(keypoints, np.float64)
    if kp.shape != (layout.NUM_KEYPOINTS, 3):
        raise EdnError(f"synthetic keypoints must have shape ({layout.NUM_KEYPOINTS}, 3), got {kp.shape}",
                       "pass one pose in the canonical layout")
    img = _background(height, width).copy()
    _Painter(img, kp, palette).draw()
    return img


def synthetic_clip(seed: int = 0, num_frames: int = 120, height: int = 256, width: int = 256,
                   fps: float = 30.0, appearance: int = 0) -> SyntheticClip:
    """The synthetic subject dancing for ``num_frames`` frames; ``seed`` picks the motion."""
    _palette(appearance)
    keypoints = synthetic_keypoints(seed, num_frames, height, width, fps)
    frames = np.stack([render_synthetic_frame(kp, height, width, appearance) for kp in keypoints])
    return SyntheticClip(frames=frames, keypoints=keypoints, fps=float(fps))
