"""An image of a person moved limb by limb from one pose into another (``model.exemplar_warp``).

The exemplar (``edn_jax.conditioning.exemplar``) is a training frame in a nearby pose, not the pose asked for: a
generator that copies its pixels draws the exemplar's limbs where they were, not where the stick
figure has them. ``warp_to_pose`` moves them: each bone of the body present in both poses
gets the similarity (rotation, scale, shift) that takes it from the asked pose onto the image's pose,
and each output pixel samples the image through the blend of its nearby bones' similarities,
weighted by a Gaussian of its distance to each bone (its width a share of the torso's length); far
from every bone a pixel keeps its place (the background does not move). A backward map, so every
output pixel gets a value; bilinear sampling (``cv2.remap``).

Far from the asked pose the image still shows its own person where it stood; given a ``fill`` (the
background plate), the output fades to it there by the bones' share of each pixel's weight
(``person``), so an exemplar of a person elsewhere in the frame leaves no second person behind.
"""

from __future__ import annotations

import cv2
import numpy as np

from edn_jax.pose import layout

BONES = np.array(layout.BODY_LIMBS)  # the hands' bones are too short to place reliably at training sizes
WIDTH = 0.15        # every bone's Gaussian width, as a share of the torso (neck to mid-hip) in the asked pose
MIN_WIDTH = 1.5     # px: the narrowest (a small person, or no torso found)
STAY = 3.0          # a pixel this many widths from every bone keeps its place (even weight with the bone)
MAX_SCALE = 2.0     # a bone's length ratio is clipped to [1 / MAX_SCALE, MAX_SCALE] (foreshortened limbs)
GRID_WIDTHS = 4.0   # the map is computed on a grid this many points per width and interpolated (it is smooth)
NECK, MID_HIP = layout.B["Neck"], layout.B["MidHip"]


def _complex(points: np.ndarray) -> np.ndarray:
    return (points[:, 0] + 1j * points[:, 1]).astype(np.complex64)


def backward_map(src_keypoints: np.ndarray, dst_keypoints: np.ndarray, height: int, width: int,
                 conf_threshold: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map_x, map_y, person) float32 [height, width]: where each pixel of an image in pose
    ``dst_keypoints`` samples an image in pose ``src_keypoints`` (both [137, 3], pixels of that
    frame), and the bones' share of its weight (near 1 on the asked pose's bones, 0 far from them).
    The identity and no person where no bone is present in both poses."""
    src, dst = np.asarray(src_keypoints, np.float32), np.asarray(dst_keypoints, np.float32)
    a, b = BONES[:, 0], BONES[:, 1]
    present = ((src[a, 2] > conf_threshold) & (src[b, 2] > conf_threshold)
               & (dst[a, 2] > conf_threshold) & (dst[b, 2] > conf_threshold))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if not present.any():
        return xs, ys, np.zeros_like(xs)
    qa, qb = _complex(dst[a[present]]), _complex(dst[b[present]])
    ea, eb = _complex(src[a[present]]), _complex(src[b[present]])
    q_vec, e_vec = qb - qa, eb - ea
    length = np.abs(q_vec)
    # The similarity z -> ea + s (z - qa) takes the asked bone onto the image's; a degenerate bone
    # (a point, in either pose) only shifts.
    usable = (length > 0.5) & (np.abs(e_vec) > 0.5)
    s = np.where(usable, e_vec / np.where(usable, q_vec, 1), 1).astype(np.complex64)
    magnitude = np.clip(np.abs(s), 1 / MAX_SCALE, MAX_SCALE)
    s = (s / np.abs(s) * magnitude).astype(np.complex64)
    torso = (np.hypot(*(dst[NECK, :2] - dst[MID_HIP, :2])) if min(dst[NECK, 2], dst[MID_HIP, 2]) > conf_threshold
             else np.max(length))
    sigma = np.float32(max(WIDTH * torso, MIN_WIDTH))
    # The map varies over a width, so it is computed every ``step`` px (at 512x1024 a step of about
    # 5 px, some 25x fewer points) and interpolated bilinearly (exact where it is affine).
    step = max(1, int(sigma // GRID_WIDTHS))
    gy, gx = np.mgrid[0:(height - 1) // step + 2, 0:(width - 1) // step + 2].astype(np.float32) * step
    pixel = (gx + 1j * gy).astype(np.complex64)
    # Distance from each pixel to each asked bone (segment), [bones, H, W].
    rel = pixel[None] - qa[:, None, None]
    t = np.clip((rel * np.conj(q_vec)[:, None, None]).real / np.maximum(length, 1e-6)[:, None, None] ** 2, 0, 1)
    distance = np.abs(rel - t * q_vec[:, None, None])
    scaled = distance / sigma
    # Log-weights: each bone's Gaussian, and the identity's as a bone STAY widths away; shifted by
    # their maximum so neither overflows.
    log_weight = -0.5 * scaled ** 2
    top = np.maximum(np.max(log_weight, axis=0), -0.5 * STAY ** 2)
    weight, stay = np.exp(log_weight - top), np.exp(-0.5 * STAY ** 2 - top)
    moved = ea[:, None, None] + s[:, None, None] * rel
    total = np.sum(weight, axis=0)
    sampled = (np.sum(weight * moved, axis=0) + stay * pixel) / (total + stay)
    person = (total / (total + stay)).astype(np.float32)
    maps = (sampled.real.astype(np.float32), sampled.imag.astype(np.float32), person)
    if step == 1:
        return tuple(m[:height, :width] for m in maps)
    grid_x, grid_y = xs / step, ys / step
    return tuple(cv2.remap(m, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for m in maps)


def warp_to_pose(image: np.ndarray, src_keypoints: np.ndarray, dst_keypoints: np.ndarray, fill=None,
                 conf_threshold: float = 0.05) -> np.ndarray:
    """``image`` [H, W, C] (uint8 or float32, any C) of a person in pose ``src_keypoints`` moved into
    pose ``dst_keypoints`` (``backward_map``); outside the frame it repeats the border. With ``fill``
    (same shape) the output fades to it away from the asked pose (``person``). Same shape and dtype."""
    map_x, map_y, person = backward_map(src_keypoints, dst_keypoints, image.shape[0], image.shape[1], conf_threshold)
    out = np.concatenate([cv2.remap(np.ascontiguousarray(image[..., c:c + 3]), map_x, map_y, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE).reshape(image.shape[:2] + (-1,))
                          for c in range(0, image.shape[-1], 3)], axis=-1)
    if fill is None:
        return out
    if np.shape(fill) != image.shape:
        raise ValueError(f"fill {np.shape(fill)} is not the image's shape {image.shape}")
    blend = person[..., None] * out.astype(np.float32) + (1 - person[..., None]) * np.asarray(fill, np.float32)
    return (np.clip(np.rint(blend), 0, 255) if image.dtype == np.uint8 else blend).astype(image.dtype)


def warped(image: np.ndarray, src_keypoints: np.ndarray, dst_keypoints: np.ndarray, warp: str,
           fill=None) -> np.ndarray:
    """``image`` [H, W, C] (an exemplar's frame and figure) as ``model.exemplar_warp`` gives it for
    pose ``dst_keypoints``: as it is with ``warp="none"``, ``warp_to_pose`` (fading to ``fill``) with "limbs"."""
    if warp == "none":
        return image
    if warp != "limbs":
        raise ValueError(f"unknown exemplar warp {warp!r}")
    return warp_to_pose(image, src_keypoints, dst_keypoints, fill)
