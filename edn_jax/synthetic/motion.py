"""The synthetic subject's body and motion: exact canonical keypoints of a cartoon person dancing.

The pose is built in 3D (body units of standing height), projected with a slightly
downward-looking orthographic camera and placed on the floor with a perspective scale
(nearer is lower and larger). ``synthetic_keypoints`` gives the 137 canonical keypoints
of every frame without drawing anything; ``edn_jax.synthetic.painter`` draws frames
from them.
"""

from __future__ import annotations

import math

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


# ---------------------------------------------------------------------------------
# Argument checks.

def check_frame_size(height: int, width: int) -> None:
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
    check_frame_size(height, width)
    if not isinstance(fps, (int, float, np.number)) or not fps > 0:
        raise EdnError(f"synthetic fps must be > 0, got {fps!r}", "pass a positive frame rate such as 30")


# ---------------------------------------------------------------------------------
# Stage geometry shared by pose placement and background drawing.

def _near_scale(height: int, width: int) -> float:
    """Pixels per unit at the nearest depth: as large as the frame allows."""
    return min((height - 2 * MARGIN * height) / (POSE_TOP + POSE_BOTTOM),
               (width - 2 * MARGIN * width) / (2 * POSE_HALF_WIDTH))


def horizon_y(height: int, width: int) -> float:
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
    horizon = horizon_y(height, width)
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
