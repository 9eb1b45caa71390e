"""An image of a person moved limb by limb from one pose into another (``model.exemplar_warp``).

The exemplar (``edn_jax.exemplar``) is a training frame in a nearby pose, not the pose asked for: a
generator that copies its pixels draws the exemplar's limbs where they were, not where the stick
figure has them. ``warp_to_pose`` moves them: each bone of the body present in both poses
gets the similarity (rotation, scale, shift) that takes it from the asked pose onto the image's pose,
and each output pixel samples the image through the blend of its nearby bones' similarities,
weighted by a Gaussian of its distance to each bone (its width a share of the torso's length); far
from every bone a pixel keeps its place (the background does not move). A backward map, so every
output pixel gets a value; bilinear sampling (``cv2.remap``).
"""

from __future__ import annotations

import cv2
import numpy as np

from edn_jax.pose import layout

BONES = np.array(layout.BODY_LIMBS)  # the hands' bones are too short to place reliably at training sizes
WIDTH = 0.15        # every bone's Gaussian width, as a share of the torso (neck to mid-hip) in the asked pose
MIN_WIDTH = 1.5     # px: the narrowest (a small person, or no torso found)
STAY = 2.5          # a pixel this many widths from every bone keeps its place (even weight with the bone)
MAX_SCALE = 2.0     # a bone's length ratio is clipped to [1 / MAX_SCALE, MAX_SCALE] (foreshortened limbs)
NECK, MID_HIP = layout.B["Neck"], layout.B["MidHip"]


def backward_map(src_keypoints: np.ndarray, dst_keypoints: np.ndarray, height: int, width: int,
                 conf_threshold: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) float32 [height, width]: where each pixel of an image in pose ``dst_keypoints``
    samples an image in pose ``src_keypoints`` (both [137, 3], pixels of that frame). The identity
    where no bone is present in both poses."""
    src, dst = np.asarray(src_keypoints, np.float32), np.asarray(dst_keypoints, np.float32)
    a, b = BONES[:, 0], BONES[:, 1]
    present = ((src[a, 2] > conf_threshold) & (src[b, 2] > conf_threshold)
               & (dst[a, 2] > conf_threshold) & (dst[b, 2] > conf_threshold))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    pixel = (xs + 1j * ys).astype(np.complex64)
    if not present.any():
        return xs, ys
    to_complex = lambda k: (k[:, 0] + 1j * k[:, 1]).astype(np.complex64)  # noqa: E731
    qa, qb = to_complex(dst[a[present]]), to_complex(dst[b[present]])
    ea, eb = to_complex(src[a[present]]), to_complex(src[b[present]])
    q_vec, e_vec = qb - qa, eb - ea
    length = np.abs(q_vec)
    # The similarity z -> ea + s (z - qa) takes the asked bone onto the image's; a degenerate bone
    # (a point, in either pose) only shifts.
    usable = (length > 0.5) & (np.abs(e_vec) > 0.5)
    s = np.where(usable, e_vec / np.where(usable, q_vec, 1), 1).astype(np.complex64)
    magnitude = np.clip(np.abs(s), 1 / MAX_SCALE, MAX_SCALE)
    s = np.where(np.abs(s) > 0, s / np.maximum(np.abs(s), 1e-6) * magnitude, 1).astype(np.complex64)
    torso = (np.hypot(*(dst[NECK, :2] - dst[MID_HIP, :2])) if min(dst[NECK, 2], dst[MID_HIP, 2]) > conf_threshold
             else np.max(length))
    sigma = np.float32(max(WIDTH * torso, MIN_WIDTH))
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
    sampled = (np.sum(weight * moved, axis=0) + stay * pixel) / (np.sum(weight, axis=0) + stay)
    return sampled.real.astype(np.float32), sampled.imag.astype(np.float32)


def warp_to_pose(image: np.ndarray, src_keypoints: np.ndarray, dst_keypoints: np.ndarray,
                 conf_threshold: float = 0.05) -> np.ndarray:
    """``image`` [H, W, C] (C <= 4, any dtype cv2 remaps) of a person in pose ``src_keypoints`` moved
    into pose ``dst_keypoints`` (``backward_map``); same shape and dtype. Outside the frame it
    repeats the border."""
    map_x, map_y = backward_map(src_keypoints, dst_keypoints, image.shape[0], image.shape[1], conf_threshold)
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def warped(image: np.ndarray, src_keypoints: np.ndarray, dst_keypoints: np.ndarray, warp: str) -> np.ndarray:
    """``image`` [H, W, C] (any C; an exemplar's frame and figure) as ``model.exemplar_warp`` gives it
    for pose ``dst_keypoints``: as it is with ``warp="none"``, ``warp_to_pose`` with "limbs"."""
    if warp == "none":
        return image
    if warp != "limbs":
        raise ValueError(f"unknown exemplar warp {warp!r}")
    map_x, map_y = backward_map(src_keypoints, dst_keypoints, image.shape[0], image.shape[1])
    parts = [cv2.remap(np.ascontiguousarray(image[..., c:c + 3]), map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).reshape(image.shape[:2] + (-1,))
             for c in range(0, image.shape[-1], 3)]
    return np.concatenate(parts, axis=-1)
