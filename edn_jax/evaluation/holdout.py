"""What an evaluation reads from a dataset: held-out records fit to the evaluated frame size, and
the baselines a model must beat, both from the training split.

* **mean training frame**: the mean of 64 training frames spread over the split;
* **nearest training frame by pose**: for each held-out pose, the training frame whose pose is
  closest (retrieval). On little footage retrieval is strong: a model that does not beat it
  has not learned to generalise beyond its training frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from edn_jax.conditioning import exemplar
from edn_jax.data.records import fit_face_box, fit_record
from edn_jax.pose.appearance import person_box

MEAN_FRAME_SAMPLES = 64  # training frames averaged into the mean-frame baseline


def records_at(split, indices, height: int, width: int) -> dict[str, np.ndarray]:
    """Records fit to a frame size: ``frame``/``label`` float32 [N, H, W, 3] in [-1, 1], ``keypoints``
    [N, 137, 3] in that frame's pixels, ``body_box`` float32 [N, 4] (the whole frame when no body),
    ``face_box`` [N, 4] and ``face_valid`` [N]."""
    out = {k: [] for k in ("frame", "label", "keypoints", "body_box", "face_box", "face_valid")}
    for i in indices:
        record = split.source[int(i)]
        frame, kps, label, tf = fit_record(np.asarray(record["frame"]), np.asarray(record["keypoints"], np.float32),
                                           height, width)
        box = person_box(kps, 0.05)
        face_box, face_valid = fit_face_box(record, tf)
        for key, value in (("frame", frame), ("label", label), ("keypoints", kps), ("face_box", face_box),
                           ("face_valid", face_valid),
                           ("body_box", np.array([0, 0, width, height], np.float32) if box is None else box)):
            out[key].append(value)
    out = {k: np.stack(v) for k, v in out.items()}
    for key in ("frame", "label"):
        out[key] = out[key].astype(np.float32) / 127.5 - 1.0
    return out


def held_out_order(split, max_frames: int) -> np.ndarray:
    """Held-out record indices grouped by video, in frame order; the first ``max_frames`` (0 = all)."""
    order = np.lexsort((split.frame_indices, split.video_ids))
    return order[:max_frames] if max_frames else order


def mean_train_frame(train_split, height: int, width: int) -> np.ndarray:
    """The mean of 64 training frames spread over the split, [1, H, W, 3] in [-1, 1]."""
    sample = np.linspace(0, len(train_split.source) - 1, min(len(train_split.source), MEAN_FRAME_SAMPLES)).astype(int)
    return records_at(train_split, sample, height, width)["frame"].mean(0, keepdims=True)


def nearest_poses(query: jax.Array, candidates: jax.Array) -> jax.Array:
    """For each pose of ``query`` [T, 137, 3], the index of the closest pose of ``candidates``
    [N, 137, 3] (``exemplar.pose_distances``: the smallest mean L2 distance over the body points
    valid in both; a candidate lacking more than a fifth of the query's body points is not taken,
    as a pose half out of frame is not close to a whole one); with none left, the index of the first."""
    return jnp.argmin(exemplar.pose_distances(query, candidates), axis=1)
