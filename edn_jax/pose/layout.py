"""The one canonical keypoint layout of edn_jax.

Every pose in the project is a float32 array of shape ``(NUM_KEYPOINTS, 3)``
holding ``(x, y, confidence)`` per point, in pixels of the source frame. The
points are ordered as OpenPose writes them to JSON: BODY_25, then the 70 face
points (68 iBUG points plus the two pupils), then the left hand and the right
hand (21 points each). "Left" and "right" are the subject's own.

A point that was not detected has confidence 0 and coordinates (0, 0), as in
OpenPose output. Everything else (detectors, JSON IO, rendering, normalization,
datasets) indexes points through the names and slices defined here.
"""

from __future__ import annotations

import numpy as np

BODY_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow",
    "LWrist", "MidHip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle",
    "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel",
    "RBigToe", "RSmallToe", "RHeel",
)
NUM_BODY = len(BODY_NAMES)  # 25
NUM_FACE = 70
NUM_HAND = 21
NUM_KEYPOINTS = NUM_BODY + NUM_FACE + 2 * NUM_HAND  # 137

BODY = slice(0, NUM_BODY)
FACE = slice(NUM_BODY, NUM_BODY + NUM_FACE)
LEFT_HAND = slice(FACE.stop, FACE.stop + NUM_HAND)
RIGHT_HAND = slice(LEFT_HAND.stop, LEFT_HAND.stop + NUM_HAND)
PARTS = {"body": BODY, "face": FACE, "left_hand": LEFT_HAND, "right_hand": RIGHT_HAND}

B = {name: i for i, name in enumerate(BODY_NAMES)}
"""Body point name -> index into the canonical array (and into BODY_25)."""

ANKLES = (B["RAnkle"], B["LAnkle"])
HEAD = (B["Nose"], B["REye"], B["LEye"], B["REar"], B["LEar"])

# Limbs of BODY_25 in OpenPose's drawing order; each is (point a, point b).
BODY_LIMBS = (
    (1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10),
    (10, 11), (8, 12), (12, 13), (13, 14), (1, 0), (0, 15), (15, 17),
    (0, 16), (16, 18), (14, 19), (19, 20), (14, 21), (11, 22), (22, 23),
    (11, 24),
)


def _chain(idx: range, closed: bool = False) -> tuple[tuple[int, int], ...]:
    pts = list(idx)
    pairs = list(zip(pts[:-1], pts[1:]))
    if closed:
        pairs.append((pts[-1], pts[0]))
    return tuple(pairs)


# Face outline in the 68-point iBUG scheme (indices relative to the face block).
FACE_JAW = range(0, 17)
FACE_RIGHT_BROW = range(17, 22)
FACE_LEFT_BROW = range(22, 27)
FACE_NOSE_BRIDGE = range(27, 31)
FACE_NOSE_BOTTOM = range(31, 36)
FACE_RIGHT_EYE = range(36, 42)
FACE_LEFT_EYE = range(42, 48)
FACE_OUTER_LIPS = range(48, 60)
FACE_INNER_LIPS = range(60, 68)
FACE_RIGHT_PUPIL = 68
FACE_LEFT_PUPIL = 69
FACE_EDGES = (
    _chain(FACE_JAW) + _chain(FACE_RIGHT_BROW) + _chain(FACE_LEFT_BROW)
    + _chain(FACE_NOSE_BRIDGE) + _chain(FACE_NOSE_BOTTOM)
    + _chain(FACE_RIGHT_EYE, closed=True) + _chain(FACE_LEFT_EYE, closed=True)
    + _chain(FACE_OUTER_LIPS, closed=True) + _chain(FACE_INNER_LIPS, closed=True)
)

# Hand bones (indices relative to a hand block): wrist to each finger's tip.
HAND_FINGERS = (range(1, 5), range(5, 9), range(9, 13), range(13, 17), range(17, 21))
HAND_EDGES = tuple(
    pair for finger in HAND_FINGERS for pair in ((0, finger[0]),) + _chain(finger)
)

# Fixed colours (RGB). One per body limb, walking the hue circle so that left
# and right limbs differ; the stick figure is the generator's only input, so the
# colours are part of the model's contract and must never change silently.
def _hue_wheel(n: int, saturation: float = 1.0, value: float = 1.0) -> tuple[tuple[int, int, int], ...]:
    colours = []
    for i in range(n):
        h = (i / n) * 6.0
        sector, frac = int(h) % 6, h - int(h)
        p, q, t = value * (1 - saturation), value * (1 - saturation * frac), value * (1 - saturation * (1 - frac))
        rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sector]
        colours.append(tuple(int(round(255 * c)) for c in rgb))
    return tuple(colours)


BODY_LIMB_COLOURS = _hue_wheel(len(BODY_LIMBS))
FACE_COLOUR = (255, 255, 255)
HAND_FINGER_COLOURS = {
    "left_hand": _hue_wheel(len(HAND_FINGERS), saturation=0.6),
    "right_hand": tuple(reversed(_hue_wheel(len(HAND_FINGERS), saturation=0.6))),
}


def empty_pose() -> np.ndarray:
    """A pose with every point missing."""
    return np.zeros((NUM_KEYPOINTS, 3), np.float32)


def present(keypoints: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Boolean mask of points whose confidence exceeds ``threshold``."""
    return keypoints[..., 2] > threshold


def bounding_box(keypoints: np.ndarray, threshold: float = 0.0):
    """Tight (x0, y0, x1, y1) box of the present points of one pose, or None."""
    mask = present(keypoints, threshold)
    if not mask.any():
        return None
    xy = keypoints[mask, :2]
    return (float(xy[:, 0].min()), float(xy[:, 1].min()),
            float(xy[:, 0].max()), float(xy[:, 1].max()))


def _mirror_permutation() -> np.ndarray:
    """``MIRROR``: each point's index in a horizontally flipped image, where the subject's left and
    right swap (LShoulder <-> RShoulder, left hand <-> right hand, the iBUG face mirrored)."""
    body = [B[("L" + n[1:]) if n[0] == "R" else ("R" + n[1:]) if n[0] == "L" else n] for n in BODY_NAMES]
    face = list(range(NUM_FACE))
    pairs = [(i, 16 - i) for i in FACE_JAW]                                    # jaw: right end <-> left end
    pairs += list(zip(FACE_RIGHT_BROW, reversed(FACE_LEFT_BROW)))             # 17..21 <-> 26..22
    pairs += [(31, 35), (32, 34)]                                              # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]      # eyes, corner to corner
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]                # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]                                    # inner lips
    pairs += [(FACE_RIGHT_PUPIL, FACE_LEFT_PUPIL)]
    for a, b in pairs:
        face[a], face[b] = b, a
    left, right = list(range(LEFT_HAND.start, LEFT_HAND.stop)), list(range(RIGHT_HAND.start, RIGHT_HAND.stop))
    return np.array(body + [FACE.start + i for i in face] + right + left, np.int64)


MIRROR = _mirror_permutation()
"""``pose[MIRROR]`` relabels a pose for a horizontally flipped image (its x must be mirrored too)."""
