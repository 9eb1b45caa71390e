"""A dataset record fit to a frame size: its frame, keypoints and face box moved into the output
frame (padded, never cropped), and the stick figure drawn there. Training batches, the background
plate, exemplars and held-out evaluation all read records through these two functions."""

from __future__ import annotations

import numpy as np

from edn_jax.pose import render


def fit_record(frame: np.ndarray, keypoints: np.ndarray, height: int, width: int, conf_threshold: float = 0.05):
    """A record's frame and keypoints at the output size, and its stick figure there.

    Returns (frame uint8, keypoints, stick figure uint8, FrameTransform); a frame stored at
    the output size is used as is.
    """
    tf = render.fit_transform(frame.shape[:2], (height, width), "pad")
    if frame.shape[:2] != (height, width):
        frame, keypoints = render.transform_image(frame, tf), render.transform_keypoints(keypoints, tf)
    return frame, keypoints, render.render_stick_figure(keypoints, height, width, conf_threshold), tf


def fit_face_box(record, tf) -> tuple[np.ndarray, bool]:
    """A record's face box (float32 [4] x0, y0, x1, y1; zeros when invalid) and validity, at the output size.

    Box corners are pixel edges (the box lies within [0, W] x [0, H]), so they map as
    x * scale + offset, which keeps a box inside the frame inside the output.
    """
    valid = bool(record["face_valid"])
    offset = np.array([tf.offset_x, tf.offset_y] * 2, np.float32)
    box = np.asarray(record["face_box"], np.float32) * np.float32(tf.scale) + offset
    return (box if valid else np.zeros(4, np.float32)), valid
