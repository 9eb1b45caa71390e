"""Stick figures, frame geometry and face boxes.

The stick figure is the generator's only input, so it must be a pure function of
the keypoints and the output size: same pose -> bit-identical image. Frames and
figures go through the same ``FrameTransform`` so that they always line up.

Coordinates follow OpenCV: integer (x, y) is the centre of pixel column x, row y.
All images are RGB uint8.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout as L

_SHIFT = 4  # cv2 sub-pixel bits: endpoints are placed to 1/16 pixel.
_ONE = 1 << _SHIFT
_MAX_COORD = float(1 << 20)  # keeps absurd coordinates inside cv2's int range.


def _check_size(height: int, width: int, what: str = "output size") -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise EdnError(f"{what} must be positive, got {height}x{width}",
                       "pass a height and width of at least 1 pixel")


def _check_poses(keypoints: np.ndarray, ndim: int) -> np.ndarray:
    kps = np.asarray(keypoints, np.float32)
    if kps.ndim != ndim or kps.shape[-2:] != (L.NUM_KEYPOINTS, 3):
        want = "[T, " * (ndim - 2) + f"{L.NUM_KEYPOINTS}, 3" + "]" * (ndim - 2)
        raise EdnError(f"keypoints have shape {kps.shape}, expected [{want}]",
                       "convert poses to the canonical layout of edn_jax.pose.layout first")
    return kps


# --------------------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class FrameTransform:
    """Uniform scale then an integer shift, from a source frame to the output size.

    A source point x maps to ``(x + 0.5) * scale - 0.5 + offset_x`` (pixel centres
    scale about pixel edges, as in cv2.resize); the offsets are integers so the
    image needs no sub-pixel shift. Negative offsets crop, positive ones pad.
    """

    scale: float
    offset_x: int
    offset_y: int
    out_height: int
    out_width: int


def fit_transform(src_hw: tuple[int, int], out_hw: tuple[int, int], mode: str = "pad") -> FrameTransform:
    """Aspect-preserving fit of ``src_hw`` into ``out_hw``, centred.

    "pad" shows the whole frame with black bars; "crop" fills the output and cuts
    the excess equally from both sides.
    """
    (sh, sw), (oh, ow) = (int(v) for v in src_hw), (int(v) for v in out_hw)
    _check_size(sh, sw, "source frame size")
    _check_size(oh, ow)
    if mode == "pad":
        scale = min(oh / sh, ow / sw)
    elif mode == "crop":
        scale = max(oh / sh, ow / sw)
    else:
        raise EdnError(f"unknown fit mode {mode!r}", 'use "pad" or "crop"')
    # cv2.resize(fx=scale) produces round(size * scale) pixels; centre that.
    rh, rw = round(sh * scale), round(sw * scale)
    return FrameTransform(scale=scale, offset_x=int((ow - rw) / 2), offset_y=int((oh - rh) / 2),
                          out_height=oh, out_width=ow)


def transform_keypoints(keypoints: np.ndarray, tf: FrameTransform) -> np.ndarray:
    """Map present points of ``[..., N, 3]`` poses through ``tf``; missing stay (0, 0, 0).

    Points that fall outside the output keep their confidence: limbs reaching
    out of the frame are still drawn up to its edge, matching the cropped image.
    """
    kps = np.asarray(keypoints, np.float32)
    out = np.zeros_like(kps)
    mask = kps[..., 2] > 0
    s = np.float32(tf.scale)
    # x*s + c rather than (x + 0.5)*s - 0.5 + offset: the same map, but exact for the identity.
    cx = np.float32(0.5 * tf.scale - 0.5 + tf.offset_x)
    cy = np.float32(0.5 * tf.scale - 0.5 + tf.offset_y)
    out[..., 0] = np.where(mask, kps[..., 0] * s + cx, 0)
    out[..., 1] = np.where(mask, kps[..., 1] * s + cy, 0)
    out[..., 2] = np.where(mask, kps[..., 2], 0)
    return out


def transform_image(image: np.ndarray, tf: FrameTransform) -> np.ndarray:
    """Resize by ``tf.scale`` and pad (black) / crop to the output size.

    INTER_AREA when shrinking avoids aliasing; INTER_LINEAR when growing.
    """
    img = np.asarray(image)
    if tf.scale != 1.0:
        interp = cv2.INTER_AREA if tf.scale < 1.0 else cv2.INTER_LINEAR
        img = cv2.resize(img, None, fx=tf.scale, fy=tf.scale, interpolation=interp)
        if img.ndim < np.ndim(image):  # cv2 drops a trailing channel axis of 1
            img = img[..., None]
    out = np.zeros((tf.out_height, tf.out_width) + img.shape[2:], img.dtype)
    rh, rw = img.shape[:2]
    # Overlap of the resized image (placed at the offsets) with the output.
    y0, x0 = max(tf.offset_y, 0), max(tf.offset_x, 0)
    y1, x1 = min(tf.offset_y + rh, tf.out_height), min(tf.offset_x + rw, tf.out_width)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = img[y0 - tf.offset_y:y1 - tf.offset_y, x0 - tf.offset_x:x1 - tf.offset_x]
    return out


# --------------------------------------------------------------------------- drawing


def _body_joint_colours() -> tuple[tuple[int, int, int], ...]:
    """Each joint takes the colour of the limb ending at it (Neck: its first limb's)."""
    colours = [L.BODY_LIMB_COLOURS[0]] * L.NUM_BODY
    for (_, b), colour in zip(L.BODY_LIMBS, L.BODY_LIMB_COLOURS):
        colours[b] = colour
    return tuple(colours)


_BODY_JOINT_COLOURS = _body_joint_colours()
# Finger of each hand bone (HAND_EDGES gives each finger len(finger) bones: wrist->base,
# then along the finger) and of each hand point; both take that finger's colour.
_HAND_BONE_FINGER = tuple(i for i, finger in enumerate(L.HAND_FINGERS) for _ in range(len(finger)))
_HAND_POINT_FINGER = {p: i for i, finger in enumerate(L.HAND_FINGERS) for p in finger}


def stick_thickness(height: int, width: int) -> int:
    """Body line thickness for an output size: min(H, W) / 80, at least 1.

    Gives 3 px at 256x256, 6 px at 512x1024 and 14 px at 1080p, so the figure
    keeps the same OpenPose-like weight relative to the person at any resolution.
    """
    return max(1, round(min(height, width) / 80))


def _draw(canvas: np.ndarray, kps: np.ndarray, conf_threshold: float, thickness: int | None) -> np.ndarray:
    """Draw one pose onto ``canvas`` in place: body, then hands, then the face on top."""
    h, w = canvas.shape[:2]
    body = int(thickness) if thickness is not None else stick_thickness(h, w)
    if body < 1:
        raise EdnError(f"stick thickness must be at least 1, got {thickness}",
                       "pass thickness=None to derive it from the output size")
    # Hands and face are smaller than limbs; thinner lines keep fingers and eyes apart.
    hand, face = max(1, round(body / 2)), max(1, round(body / 4))
    joint_r, hand_r = max(1, round(body * 0.7)), max(1, round(hand * 0.7))

    ok = (kps[:, 2] > conf_threshold) & np.isfinite(kps[:, :2]).all(axis=1)
    pts = np.round(np.clip(np.nan_to_num(kps[:, :2]), -_MAX_COORD, _MAX_COORD) * _ONE).astype(np.int64)
    pts = [tuple(int(v) for v in p) for p in pts]

    def line(a: int, b: int, colour, t: int) -> None:
        if ok[a] and ok[b]:
            cv2.line(canvas, pts[a], pts[b], colour, t, cv2.LINE_AA, _SHIFT)

    def dot(p: int, colour, r: int) -> None:
        if ok[p]:
            cv2.circle(canvas, pts[p], r * _ONE, colour, -1, cv2.LINE_AA, _SHIFT)

    for p in range(L.NUM_BODY):  # joints under the limbs, so every limb shows its colour
        dot(p, _BODY_JOINT_COLOURS[p], joint_r)
    for (a, b), colour in zip(L.BODY_LIMBS, L.BODY_LIMB_COLOURS):
        line(a, b, colour, body)
    for part in ("left_hand", "right_hand"):
        base, colours = L.PARTS[part].start, L.HAND_FINGER_COLOURS[part]
        for (a, b), finger in zip(L.HAND_EDGES, _HAND_BONE_FINGER):
            line(base + a, base + b, colours[finger], hand)
        for p, finger in _HAND_POINT_FINGER.items():
            dot(base + p, colours[finger], hand_r)
    base = L.FACE.start
    for a, b in L.FACE_EDGES:
        line(base + a, base + b, L.FACE_COLOUR, face)
    for p in (L.FACE_RIGHT_PUPIL, L.FACE_LEFT_PUPIL):
        dot(base + p, L.FACE_COLOUR, face)
    return canvas


def render_stick_figure(keypoints: np.ndarray, height: int, width: int,
                        conf_threshold: float = 0.05, thickness: int | None = None) -> np.ndarray:
    """The generator's input: a colour stick figure on black, uint8 [H, W, 3] RGB.

    A limb is drawn only when both ends have confidence > ``conf_threshold``;
    ``thickness`` (body lines, px) defaults to ``stick_thickness(height, width)``.
    """
    kps = _check_poses(keypoints, 2)
    _check_size(height, width)
    canvas = np.zeros((int(height), int(width), 3), np.uint8)
    return _draw(canvas, kps, conf_threshold, thickness)


def render_stick_figures(keypoints: np.ndarray, height: int, width: int,
                         conf_threshold: float = 0.05, thickness: int | None = None) -> np.ndarray:
    """``render_stick_figure`` over a sequence: [T, 137, 3] -> uint8 [T, H, W, 3]."""
    kps = _check_poses(keypoints, 3)
    _check_size(height, width)
    out = np.zeros((len(kps), int(height), int(width), 3), np.uint8)
    for t in range(len(kps)):
        _draw(out[t], kps[t], conf_threshold, thickness)
    return out


def draw_overlay(frame_rgb: np.ndarray, keypoints: np.ndarray, conf_threshold: float = 0.05,
                 thickness: int | None = None, alpha: float = 0.75) -> np.ndarray:
    """The stick figure over a copy of ``frame_rgb`` (for checking detections by eye).

    The figure is blended with weight ``alpha`` so the body under it stays visible.
    """
    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise EdnError(f"overlay needs a uint8 [H, W, 3] RGB frame, got {frame.dtype} {frame.shape}",
                       "decode the frame to 8-bit RGB first")
    figure = _draw(frame.copy(), _check_poses(keypoints, 2), conf_threshold, thickness)
    return cv2.addWeighted(figure, alpha, frame, 1.0 - alpha, 0.0)


# --------------------------------------------------------------------------- face boxes


def _face_extents(kps: np.ndarray, conf_threshold: float):
    """Per pose: centre [T, 2] and extent [T] of the face points, else of the head
    points (Nose, Eyes, Ears); valid [T] is False when neither is present."""
    def extent(points: np.ndarray):
        mask = (points[..., 2] > conf_threshold) & np.isfinite(points[..., :2]).all(-1)
        xy = np.where(mask[..., None], points[..., :2], np.nan)
        any_ = mask.any(-1)
        safe = np.where(any_[:, None, None], xy, 0.0)  # keeps nanmin quiet on empty rows
        lo, hi = np.nanmin(safe, axis=1), np.nanmax(safe, axis=1)
        return (lo + hi) / 2, (hi - lo).max(-1), any_

    fc, fe, fv = extent(kps[:, L.FACE])
    hc, he, hv = extent(kps[:, list(L.HEAD)])
    centre = np.where(fv[:, None], fc, hc)
    size = np.where(fv, fe, he)
    return centre, size, fv | hv


def face_boxes(keypoints: np.ndarray, height: int, width: int, box_scale: float = 1.5,
               min_size: float = 32.0, conf_threshold: float = 0.05):
    """Batched ``face_box``: [T, 137, 3] -> (float32 [T, 4] x0, y0, x1, y1; bool [T] valid)."""
    kps = _check_poses(keypoints, 3)
    _check_size(height, width, "frame size")
    if box_scale < 1.0 or min_size <= 0:
        raise EdnError(f"face box needs box_scale >= 1 and min_size > 0, got {box_scale}, {min_size}",
                       "a smaller box would cut off face points")
    centre, extent, valid = _face_extents(kps, conf_threshold)
    side = np.minimum(np.maximum(extent * box_scale, min_size), min(height, width))
    x0 = np.clip(centre[:, 0] - side / 2, 0, width - side)
    y0 = np.clip(centre[:, 1] - side / 2, 0, height - side)
    boxes = np.stack([x0, y0, x0 + side, y0 + side], axis=-1).astype(np.float32)
    return np.where(valid[:, None], boxes, 0).astype(np.float32), valid


def face_box(keypoints: np.ndarray, height: int, width: int, box_scale: float = 1.5,
             min_size: float = 32.0, conf_threshold: float = 0.05):
    """Square box the face GAN crops: (float32 [4] x0, y0, x1, y1; valid).

    Centred on the face points' bounding box (else the head points), side =
    extent * box_scale but at least ``min_size``, shifted to lie inside the frame;
    it shrinks only when the frame is smaller than the box. Invalid (zeros, False)
    with no face or head point.
    """
    boxes, valid = face_boxes(_check_poses(keypoints, 2)[None], height, width, box_scale, min_size,
                              conf_threshold)
    return boxes[0], bool(valid[0])


def fixed_size_face_box(keypoints: np.ndarray, height: int, width: int, size: int,
                        conf_threshold: float = 0.05):
    """Integer square box of exactly ``size`` px around the face centre, inside the frame.

    For generators that crop a fixed-size face patch. Returns (int32 [4] x0, y0,
    x1, y1; valid); invalid (zeros, False) with no face or head point.
    """
    kps = _check_poses(keypoints, 2)
    _check_size(height, width, "frame size")
    size = int(size)
    if not 0 < size <= min(height, width):
        raise EdnError(f"face crop size {size} does not fit a {height}x{width} frame",
                       "use a size between 1 and the frame's smaller side")
    centre, _, valid = _face_extents(kps[None], conf_threshold)
    if not valid[0]:
        return np.zeros(4, np.int32), False
    # Pixels x0 .. x0+size-1 have their middle at x0 + (size - 1) / 2; round that onto the centre.
    x0, y0 = (int(np.clip(np.floor(c + 1 - size / 2), 0, limit - size))
              for c, limit in zip(centre[0], (width, height)))
    return np.array([x0, y0, x0 + size, y0 + size], np.int32), True
