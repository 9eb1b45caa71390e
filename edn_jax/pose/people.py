"""Finding people with a detector that sees at most one person per call.

Several people are found by detecting, masking the found person out and detecting again; a
region is searched by detecting on its crop; a person upside down or lying sideways, whom the
detector misses upright, by detecting on the crop turned a quarter, half or three quarters.
Keypoints always come back in pixels of the whole frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from edn_jax.pose.appearance import person_box
from edn_jax.pose.detector import PoseDetector

MIN_WINDOW = 16  # pixels: smaller crops are not searched


def masked(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with ``box`` painted in the frame's mean colour."""
    out = frame.copy()
    h, w = frame.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    out[y0:y1, x0:x1] = np.array(cv2.mean(frame)[:frame.shape[2]]).astype(frame.dtype)  # cv2: ~40x numpy's mean
    return out


def grow(box: np.ndarray, margin: float, height: int, width: int) -> np.ndarray:
    """``box`` grown by ``margin`` of its size on every side, clipped to the frame."""
    size = np.maximum(box[2:] - box[:2], 1.0)
    grown = np.concatenate([box[:2] - margin * size, box[2:] + margin * size])
    return np.clip(grown, 0, [width, height, width, height]).astype(np.float32)


def detect_people(detector: PoseDetector, frame: np.ndarray, max_people: int, threshold: float,
                  exclude: list[np.ndarray] = ()) -> list[np.ndarray]:
    """Everyone the detector finds, by detecting and masking out repeatedly; the boxes in
    ``exclude`` (people already known) are masked from the start."""
    image = frame
    for box in exclude:
        image = masked(image, grow(box, 0.1, *frame.shape[:2]))
    people = []
    for _ in range(max_people):
        kps = detector.detect(image)
        box = None if kps is None else person_box(kps, threshold)
        if box is None:
            break
        people.append(kps)
        image = masked(image, grow(box, 0.1, *frame.shape[:2]))
    return people


def _crop(frame: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    x0, y0, x1, y1 = (int(v) for v in np.round(window))
    if x1 - x0 < MIN_WINDOW or y1 - y0 < MIN_WINDOW:
        return None
    return np.ascontiguousarray(frame[y0:y1, x0:x1]), x0, y0


def _shift(kps: np.ndarray | None, x0: int, y0: int) -> np.ndarray | None:
    if kps is None:
        return None
    present = kps[:, 2] > 0
    kps[present, 0] += x0
    kps[present, 1] += y0
    return kps


def detect_in_window(detector: PoseDetector, frame: np.ndarray, window: np.ndarray,
                     mask: np.ndarray | None = None, keep: np.ndarray | None = None) -> np.ndarray | None:
    """Detects inside a window of the frame, with the box ``mask`` masked out if given, except for
    where it overlaps the box ``keep`` (boxes in frame pixels)."""
    crop = _crop(frame, window)
    if crop is None:
        return None
    image, x0, y0 = crop
    if mask is not None:
        offset = np.array([x0, y0, x0, y0], np.float32)
        out = masked(image, mask - offset)
        if keep is not None:
            kx0, ky0, kx1, ky1 = (int(v) for v in np.clip(np.round(keep - offset), 0, [*image.shape[1::-1]] * 2))
            out[ky0:ky1, kx0:kx1] = image[ky0:ky1, kx0:kx1]
        image = out
    return _shift(detector.detect(image), x0, y0)


def unrotate(kps: np.ndarray, quarters: int, height: int, width: int) -> np.ndarray:
    """Keypoints found on ``np.rot90(image, quarters)`` back in pixels of ``image`` (height x width)."""
    out = kps.copy()
    present = kps[:, 2] > 0
    x, y = kps[present, 0], kps[present, 1]
    q = quarters % 4
    if q == 1:    # rot90 once: (x, y) -> (y, width - x)
        out[present, 0], out[present, 1] = width - y, x
    elif q == 2:  # (x, y) -> (width - x, height - y)
        out[present, 0], out[present, 1] = width - x, height - y
    elif q == 3:  # (x, y) -> (height - y, x)
        out[present, 0], out[present, 1] = y, height - x
    return out


def detect_rotated(detector: PoseDetector, frame: np.ndarray, window: np.ndarray, quarters: int) -> np.ndarray | None:
    """Detects on the window's crop turned ``quarters`` times 90 degrees anticlockwise: a person
    upside down (2) or lying (1, 3) stands upright there. Rotation keeps left and right."""
    crop = _crop(frame, window)
    if crop is None:
        return None
    image, x0, y0 = crop
    kps = detector.detect(np.ascontiguousarray(np.rot90(image, quarters)))
    if kps is None:
        return None
    return _shift(unrotate(kps, quarters, *image.shape[:2]), x0, y0)
