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
the training frames in which the person's box (from its keypoints, grown by ``PERSON_MARGIN``) does
not cover it; a pixel the person covers in almost every frame takes the median of all frames.
Training, evaluation and transfer compute it from the same dataset, so they use the same plate.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from edn_jax.input_pipeline import fit_record
from edn_jax.pose import layout

MODES = ("none", "input", "composite")
PLATE_SAMPLES = 120   # training frames, spread over the split, the plate is the median of
PERSON_MARGIN = 0.15  # the person's box grows by this fraction of its height on each side
MIN_UNCOVERED = 0.1   # a pixel needs this share of the sampled frames free of the person
STRIP_ROWS = 64       # rows per median pass: memory stays ~PLATE_SAMPLES x 64 rows x width


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


def plate(frames: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """The background plate of frames uint8 [N, H, W, 3] with their poses [N, 137, 3]: uint8 [H, W, 3]."""
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    boxes = person_boxes(keypoints, h, w)
    out = np.empty((h, w, 3), np.uint8)
    need = max(1, int(np.ceil(MIN_UNCOVERED * n)))
    for r0 in range(0, h, STRIP_ROWS):
        r1 = min(h, r0 + STRIP_ROWS)
        strip = frames[:, r0:r1].astype(np.float32)
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
    return out


def plate_from_split(split, height: int, width: int) -> np.ndarray:
    """The plate of a dataset's training split (``dataset.open_split``) at height x width: uint8 [H, W, 3]."""
    count = len(split.source)
    picks = np.unique(np.linspace(0, count - 1, min(count, PLATE_SAMPLES)).astype(int))
    frames, poses = [], []
    for i in picks:
        record = split.source[int(i)]
        frame, kps, _, _ = fit_record(np.asarray(record["frame"]), np.asarray(record["keypoints"], np.float32),
                                      height, width)
        frames.append(frame)
        poses.append(kps)
    return plate(np.stack(frames), np.stack(poses))


def to_unit(plate_u8: np.ndarray) -> np.ndarray:
    """A uint8 plate [H, W, 3] as the generator sees it: float32 [1, H, W, 3] in [-1, 1]."""
    return (np.asarray(plate_u8, np.float32) / 127.5 - 1.0)[None]


def from_unit(plate_unit) -> np.ndarray:
    """``to_unit``'s inverse: the plate as uint8 [H, W, 3] (exact for a plate ``to_unit`` made)."""
    return np.clip(np.rint((np.asarray(plate_unit, np.float32)[0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def composite(output, background):
    """G's 4-channel output (colours, mask, all in [-1, 1] from tanh) over ``background`` [.., 3]:
    ``m * colours + (1 - m) * background`` with m = (mask + 1) / 2."""
    mask = (output[..., 3:] + 1.0) * 0.5
    return mask * output[..., :3] + (1.0 - mask) * jnp.asarray(background, output.dtype)
