"""The target's static background, taken from the footage, and the generator's use of it.

Everybody Dance Now films the target with a fixed camera, so everything but the person is the same
in every frame. A generator trained on a few minutes of that footage can memorise it frame by
frame, and then an unseen pose dissolves the whole frame, background included. Given a background
plate, it has only the person to draw (``model.background``):

* ``"input"``: G sees the plate as three more input channels;
* ``"composite"``: G also sees it, and its output has a fourth channel, a soft mask m in [0, 1];
  the frame is ``m * G's colours + (1 - m) * plate`` (vid2vid's foreground/background split), so
  wherever the person is not, the background of any pose is the real one.

The plate is a pure function of the training split and the frame size: per pixel, the median of
the training frames in which the person does not cover it. A pixel the person covers in almost
every frame (a target who dances in place covers the same pixels all the time) has no such median.
``model.plate_fill`` says what counts as covered and what such a pixel gets:

* ``"inpaint"``: covered is within ``PLATE_COVER`` of the figure's height of its stick figure (the
  solid part of ``pose_region``), so the pixels between the legs and beside the body are free in
  the frames where they are; a pixel never free is filled from the background around it (OpenCV's
  Telea inpainting, which measured closest to known background among cv2's and cv2.xphoto's
  methods, docs/results.md);
* ``"median"`` (models trained before the field): covered is inside the person's box (from its
  keypoints, grown by ``PERSON_MARGIN``), and a pixel never free takes the median of all frames,
  which is the person, so the plate keeps a blurred body where the target usually stands.

With ``model.composite_region`` > 0 the mask is also confined to the pose asked for: it is
multiplied by ``pose_region`` of the stick figure (on within that fraction of the figure's height of
a drawn pixel, fading to 0 at 1.5 times it), so nothing is drawn away from the pose, and a frame
with no figure is the plate. Training, evaluation and transfer compute the plate from the same
dataset and gate the same way.
"""

from __future__ import annotations

import dataclasses
import warnings

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from edn_jax.data.records import fit_record
from edn_jax.pose import layout, render

MODES = ("none", "input", "composite")
FILLS = ("inpaint", "median")  # model.plate_fill: what a pixel never free of the person gets
PLATE_SAMPLES = 120   # training frames, spread over the split, the plate is the median of
PERSON_MARGIN = 0.15  # the person's box grows by this fraction of its height on each side
MIN_UNCOVERED = 0.1   # a pixel needs this share of the sampled frames free of the person
STRIP_ROWS = 64       # rows per median pass: memory stays ~PLATE_SAMPLES x 64 rows x width
FIGURE_BATCH = 16     # stick figures drawn and measured at once by figure_cover
INPAINT_RADIUS = 5    # px around a filled pixel that Telea's inpainting draws from
PLATE_COVER = 0.2     # "inpaint": the person covers pixels within this fraction of its figure's height
MOSTLY_FILLED = 0.5   # a plate with more of its frame filled than this is reported as a warning
REGION_FADE = 0.5     # pose_region falls from 1 to 0 over this fraction of its radius beyond it
REGION_GRID = 128     # pose_region measures distances on a grid of at most this many cells a side


def uses_plate(mode: str) -> bool:
    return mode in ("input", "composite")


def output_channels(mode: str) -> int:
    """The main generator's output channels: RGB, plus the mask for ``"composite"``."""
    return 4 if mode == "composite" else 3


def person_boxes(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Each pose's box of present points grown by ``PERSON_MARGIN`` of its height, as int rows/cols
    [N, 4] (x0, y0, x1, y1) clipped to the frame; (0, 0, 0, 0) without a point."""
    kps = np.asarray(keypoints, np.float32)
    boxes = np.zeros((len(kps), 4), np.int64)
    for i, pose in enumerate(kps):
        tight = layout.bounding_box(pose, 0.05)
        if tight is None:
            continue
        x0, y0, x1, y1 = tight
        m = PERSON_MARGIN * max(y1 - y0, x1 - x0, 1.0)
        boxes[i] = (max(0, int(np.floor(x0 - m))), max(0, int(np.floor(y0 - m))),
                    min(width, int(np.ceil(x1 + m)) + 1), min(height, int(np.ceil(y1 + m)) + 1))
    return boxes


@dataclasses.dataclass(frozen=True)
class Plate:
    """A background plate and where it was not seen: ``image`` uint8 [H, W, 3]; ``filled`` bool [H, W],
    the pixels no (or almost no) training frame shows free of the person, filled by ``fill``."""

    image: np.ndarray
    filled: np.ndarray
    fill: str

    @property
    def filled_fraction(self) -> float:
        return float(self.filled.mean())

    def report(self) -> str:
        """One line on the plate for the training log; a warning when most of the frame was never free."""
        share = f"{100 * self.filled_fraction:.0f}% of the frame"
        how = ("filled from the background around it" if self.fill == "inpaint"
               else "given the median of all frames (the person)")
        text = f"background plate: {share} is never free of the person in the training frames; {how}"
        if self.filled_fraction > MOSTLY_FILLED:
            text = (f"warning: {text}. The person covers most of the frame, so the plate is mostly guessed: "
                    "film the target smaller in the frame, or moving around more, for a better background")
        return text


def plate_with_mask(frames: np.ndarray, keypoints: np.ndarray, fill: str = "inpaint") -> Plate:
    """The background plate of frames uint8 [N, H, W, 3] with their poses [N, 137, 3] (module docstring)."""
    if fill not in FILLS:
        raise ValueError(f"plate fill {fill!r} is not one of {FILLS}")
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    cover = figure_cover(keypoints, h, w) if fill == "inpaint" else None
    boxes = person_boxes(keypoints, h, w) if cover is None else None
    out = np.empty((h, w, 3), np.uint8)
    filled = np.zeros((h, w), bool)
    need = max(1, int(np.ceil(MIN_UNCOVERED * n)))
    for r0 in range(0, h, STRIP_ROWS):
        r1 = min(h, r0 + STRIP_ROWS)
        strip = frames[:, r0:r1].astype(np.float32)
        if cover is not None:
            covered = cover[:, r0:r1]
        else:
            covered = np.zeros(strip.shape[:3], bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes):
                a, b = max(y0, r0) - r0, min(y1, r1) - r0
                if b > a and x1 > x0:
                    covered[i, a:b, x0:x1] = True
        free = np.where(covered[..., None], np.nan, strip)
        enough = (~covered).sum(axis=0) >= need
        with warnings.catch_warnings():  # a pixel covered in every frame: its nanmedian is NaN, not used
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.where(enough[..., None], np.nanmedian(free, axis=0), np.median(strip, axis=0))
        out[r0:r1] = np.clip(np.round(median), 0, 255).astype(np.uint8)
        filled[r0:r1] = ~enough
    if fill == "inpaint" and filled.any() and not filled.all():
        out = cv2.inpaint(out, filled.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return Plate(out, filled, fill)


def figure_cover(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Where each pose's person may be: within ``PLATE_COVER`` of its figure's height of its stick
    figure, bool [N, H, W] (``pose_region``'s solid part)."""
    out = np.zeros((len(keypoints), height, width), bool)
    for i in range(0, len(keypoints), FIGURE_BATCH):  # a few figures at a time keep memory small
        labels = render.render_stick_figures(np.asarray(keypoints[i:i + FIGURE_BATCH], np.float32), height, width)
        region = pose_region(jnp.asarray(labels, jnp.float32) / 127.5 - 1.0, PLATE_COVER)
        out[i:i + FIGURE_BATCH] = np.asarray(region[..., 0]) >= 1.0
    return out


def plate(frames: np.ndarray, keypoints: np.ndarray, fill: str = "inpaint") -> np.ndarray:
    """``plate_with_mask``'s image: uint8 [H, W, 3]."""
    return plate_with_mask(frames, keypoints, fill).image


def plate_from_split(split, height: int, width: int, fill: str = "inpaint") -> Plate:
    """The plate of a dataset's training split (``dataset.open_split``) at height x width."""
    count = len(split.source)
    picks = np.unique(np.linspace(0, count - 1, min(count, PLATE_SAMPLES)).astype(int))
    frames, poses = [], []
    for i in picks:
        record = split.source[int(i)]
        frame, kps, _, _ = fit_record(np.asarray(record["frame"]), np.asarray(record["keypoints"], np.float32),
                                      height, width)
        frames.append(frame)
        poses.append(kps)
    return plate_with_mask(np.stack(frames), np.stack(poses), fill)


def to_unit(plate_u8: np.ndarray) -> np.ndarray:
    """A uint8 plate [H, W, 3] as the generator sees it: float32 [1, H, W, 3] in [-1, 1]."""
    return (np.asarray(plate_u8, np.float32) / 127.5 - 1.0)[None]


def from_unit(plate_unit) -> np.ndarray:
    """``to_unit``'s inverse: the plate as uint8 [H, W, 3] (exact for a plate ``to_unit`` made)."""
    return np.clip(np.rint((np.asarray(plate_unit, np.float32)[0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _squared_distance(on):
    """Squared distance in cells from each cell of ``on`` bool [B, h, w] to the nearest True cell (exact,
    two separable passes; a large value where ``on`` has no True cell)."""
    h, w = on.shape[1:]
    far = jnp.float32(4 * (h * h + w * w))
    xs, ys = jnp.arange(w, dtype=jnp.float32), jnp.arange(h, dtype=jnp.float32)
    dx2 = (xs[:, None] - xs[None, :]) ** 2  # [x, x']
    along_rows = jnp.min(jnp.where(on[:, :, None, :], dx2[None, None], far), axis=-1)  # [B, h, w]
    dy2 = (ys[:, None] - ys[None, :]) ** 2  # [y, y']
    return jnp.min(along_rows[:, None, :, :] + dy2[None, :, :, None], axis=2)  # [B, h, w]


def pose_region(label, fraction: float):
    """Where a person drawn on the stick figure ``label`` [B, H, W, 3] (in [-1, 1], black background)
    may be: 1 within ``fraction`` of the figure's height (its drawn rows) of a drawn pixel, falling
    linearly to 0 at ``1 + REGION_FADE`` times that distance; all 0 for an empty figure. float32
    [B, H, W, 1]. Distances are exact on a grid of at most ``REGION_GRID`` cells a side (each cell
    the max of its pixels), so the cost stays small at any frame size."""
    label = jax.lax.stop_gradient(jnp.asarray(label, jnp.float32))
    b, h, w = label.shape[:3]
    drawn = jnp.max(label, axis=-1) > -1.0 + 1.0 / 127.5  # any channel above black
    rows = jnp.any(drawn, axis=2)
    top = jnp.argmax(rows, axis=1)
    bottom = h - 1 - jnp.argmax(rows[:, ::-1], axis=1)
    figure_height = jnp.where(jnp.any(rows, axis=1), bottom - top + 1, 0).astype(jnp.float32)
    cell = max(1, -(-max(h, w) // REGION_GRID))
    ph, pw = -(-h // cell) * cell, -(-w // cell) * cell
    padded = jnp.pad(drawn, ((0, 0), (0, ph - h), (0, pw - w)))
    coarse = padded.reshape(b, ph // cell, cell, pw // cell, cell).any(axis=(2, 4))
    distance = jnp.sqrt(_squared_distance(coarse)) * cell  # px, to the nearest cell holding a drawn pixel
    distance = jnp.repeat(jnp.repeat(distance, cell, axis=1), cell, axis=2)[:, :h, :w]
    radius = (fraction * figure_height)[:, None, None]
    region = jnp.clip(1.0 - (distance - radius) / jnp.maximum(REGION_FADE * radius, 1.0), 0.0, 1.0)
    return jnp.where(radius > 0, region, 0.0)[..., None]


def composite(output, background, label=None, region: float = 0.0):
    """G's 4-channel output (colours, mask, all in [-1, 1] from tanh) over ``background`` [.., 3]:
    ``m * colours + (1 - m) * background`` with m = (mask + 1) / 2; with ``region`` > 0
    (``model.composite_region``) m is also multiplied by ``pose_region(label, region)``, so away from
    the stick figure ``label`` the frame is the background."""
    mask = (output[..., 3:] + 1.0) * 0.5
    if region > 0:
        mask = mask * pose_region(label, region).astype(mask.dtype)
    return mask * output[..., :3] + (1.0 - mask) * jnp.asarray(background, output.dtype)
