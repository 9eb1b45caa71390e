"""Training-time augmentation of a pose-frame pair: one random similarity transform (scale, rotation,
shift, horizontal flip) applied jointly to the frames, their keypoints (the stick figures are drawn
from the moved keypoints, so their line widths stay those of real inputs), their face boxes and
the background plate.

With a few minutes of footage a generator sees each body position in few places and sizes; the
same person moved, scaled and mirrored shows it more, so it has to learn to draw the stick figure
it is given rather than recall the training frame nearest to it. A flip mirrors the image and
relabels the pose (``layout.MIRROR``: the subject's left becomes right), so the colour code of
the stick figure keeps meaning the same limbs.

Both frames of a temporal pair get the same transform: the motion between them is the real one.
Parameters are a pure function of (seed, step, row), so a resumed run draws the same ones.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout

BORDER = cv2.BORDER_REFLECT_101  # the moved-in margin continues the scene instead of a black edge


@dataclasses.dataclass(frozen=True)
class Augment:
    """Ranges of the transform: scale in [1 - scale, 1 + scale], rotation in [-rotate, rotate] degrees,
    shift in [-shift, shift] of the frame's height and width, flip with probability ``flip``."""

    scale: float = 0.0
    rotate: float = 0.0
    shift: float = 0.0
    flip: float = 0.0

    @classmethod
    def from_config(cls, section) -> "Augment":
        """From ``config.train.augment``, checked."""
        aug = cls(float(section.scale), float(section.rotate), float(section.shift), float(section.flip))
        checks = [(0 <= aug.scale < 1, "scale", "e.g. 0.1 (sizes 0.9x..1.1x)"),
                  (0 <= aug.rotate <= 45, "rotate", "e.g. 5 (degrees)"),
                  (0 <= aug.shift < 0.5, "shift", "e.g. 0.05 (of the frame's size)"),
                  (0 <= aug.flip <= 1, "flip", "a probability, e.g. 0.5")]
        for ok, name, fix in checks:
            if not ok:
                raise EdnError(f"train.augment.{name}={getattr(aug, name)} is out of range", f"use {fix}, or 0 for none")
        return aug

    @property
    def enabled(self) -> bool:
        return any((self.scale, self.rotate, self.shift, self.flip))

    def sample(self, rng: np.random.Generator) -> dict:
        """One draw of the transform's parameters."""
        return {"scale": 1.0 + rng.uniform(-self.scale, self.scale), "angle": rng.uniform(-self.rotate, self.rotate),
                "dx": rng.uniform(-self.shift, self.shift), "dy": rng.uniform(-self.shift, self.shift),
                "flip": bool(rng.uniform() < self.flip)}


def matrix(params: dict, height: int, width: int) -> np.ndarray:
    """The 2x3 affine map (pixel centres at integer coordinates, as keypoints and cv2) of ``params``:
    flip, scale and rotate about the frame's centre, then shift."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a = math.radians(params["angle"])
    s = params["scale"]
    linear = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if params["flip"]:
        linear = linear @ np.diag([-1.0, 1.0])
    centre = np.array([cx, cy])
    offset = centre - linear @ centre + np.array([params["dx"] * width, params["dy"] * height])
    return np.concatenate([linear, offset[:, None]], axis=1)


def warp_image(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``image`` [H, W, C] moved by ``m`` (bilinear, reflected border), same size and dtype."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=BORDER)


def warp_keypoints(keypoints: np.ndarray, m: np.ndarray, flip: bool) -> np.ndarray:
    """Poses [..., 137, 3] moved by ``m`` and, for a flip, relabelled left <-> right; missing points stay (0, 0, 0)."""
    kps = np.asarray(keypoints, np.float32)
    if flip:
        kps = kps[..., layout.MIRROR, :]
    present = kps[..., 2] > 0
    xy = kps[..., :2] @ m[:, :2].T.astype(np.float32) + m[:, 2].astype(np.float32)
    out = np.zeros_like(kps)
    out[..., :2] = np.where(present[..., None], xy, 0)
    out[..., 2] = np.where(present, kps[..., 2], 0)
    return out


def warp_box(box: np.ndarray, valid: bool, m: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """A face box (x0, y0, x1, y1, pixel edges) moved by ``m``: the box around its moved corners, clipped
    to the frame; no longer valid when its centre left the frame (zeros then, as an invalid box)."""
    if not valid:
        return np.zeros(4, np.float32), False
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) - 0.5  # edges -> centre coordinates
    moved = corners @ m[:, :2].T + m[:, 2] + 0.5
    centre = moved.mean(axis=0)
    if not (0 <= centre[0] < width and 0 <= centre[1] < height):
        return np.zeros(4, np.float32), False
    lo, hi = np.maximum(moved.min(axis=0), 0), np.minimum(moved.max(axis=0), [width, height])
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float32), True
