"""The exemplar: the target's own training frame nearest by pose, given to the generator.

On little footage retrieval is a strong baseline: for an unseen pose, the training frame whose
pose is closest is often almost the answer, and a generator that only sees a stick figure has to
redraw all of the target's detail from memory. With ``model.exemplar`` the generator also sees
that frame and its stick figure (six more input channels), so it can draw the pose from a real
image of the target in a nearby pose:

* ``"input"``: G sees the exemplar;
* ``"copy"``: G also draws a copy mask c (one more output channel), and its colours are
  ``c * exemplar + (1 - c) * G's`` (``inference.generate``): where the two stick figures agree, G can
  take the real frame's pixels instead of redrawing them, as the background plate lets it take the
  background's.

* **Inference** (evaluation, transfer): the exemplar of each input pose is the training frame
  nearest to it by pose (``nearest``, the retrieval baseline's choice), at the render size.
* **Training**: the nearest training frame of a training frame is its neighbour in time, a near
  copy, which an unseen pose does not have. So each training frame's candidates are the
  ``train.exemplar_candidates`` training poses nearest to it among the frames more than
  ``train.exemplar_exclude`` frames away from it in its own video (any frame of another video),
  and each step picks one of them at random (``training_candidates``).

With ``model.exemplar_warp="limbs"`` each exemplar is first moved bone by bone from its own pose
into the pose asked for (``limb_warp.warped``), in training and at inference alike.

Distances are ``pose_distances``: the mean distance over the body points present in both poses;
a pose that lacks more than a fifth of the query's body points is not a candidate.
"""

from __future__ import annotations

import collections
import threading

import jax
import jax.numpy as jnp
import numpy as np

from edn_jax.conditioning import background
from edn_jax.data import dataset, limb_warp
from edn_jax.data.records import fit_record
from edn_jax.pose import layout
from edn_jax.runtime import images

MIN_SHARED = 0.8        # a candidate must have this share of the query's body points
QUERY_BLOCK = 64        # query poses per distance block (memory: block x N x 25 points)
CACHE_RECORDS = 512     # exemplars kept decoded by an ``ExemplarBank``


@jax.jit
def pose_distances(query: jax.Array, candidates: jax.Array, conf_threshold: float = 0.05) -> jax.Array:
    """Distances [T, N] from each pose of ``query`` [T, 137, 3] to each of ``candidates`` [N, 137, 3]:
    the mean L2 distance (px) over the body points valid in both; inf where a candidate shares no
    body point with the query or fewer than ``MIN_SHARED`` of the query's valid ones."""
    body = np.arange(layout.BODY.start, layout.BODY.stop)
    q, c = query[:, None, body].astype(jnp.float32), candidates[None, :, body].astype(jnp.float32)
    valid_q, both = q[..., 2] > conf_threshold, (q[..., 2] > conf_threshold) & (c[..., 2] > conf_threshold)
    distance = jnp.sqrt(jnp.sum((q[..., :2] - c[..., :2]) ** 2, axis=-1))
    shared = jnp.sum(both, axis=-1)
    mean = jnp.sum(jnp.where(both, distance, 0.0), axis=-1) / jnp.maximum(shared, 1)
    usable = (shared > 0) & (shared >= MIN_SHARED * jnp.sum(valid_q, axis=-1))
    return jnp.where(usable, mean, jnp.inf)


def nearest(query, candidates) -> np.ndarray:
    """For each pose of ``query`` [T, 137, 3], the index of the closest of ``candidates`` [N, 137, 3]
    (``pose_distances``); -1 where none is usable (e.g. a frame without a person)."""
    distance = pose_distances(jnp.asarray(query), jnp.asarray(candidates))
    found = jnp.where(jnp.isfinite(jnp.min(distance, axis=1)), jnp.argmin(distance, axis=1), -1)
    return np.asarray(found)


def training_candidates(poses: np.ndarray, video_ids: np.ndarray, frame_indices: np.ndarray, exclude: int,
                        count: int) -> np.ndarray:
    """int32 [N, count]: for each training record (poses [N, 137, 3]), the ``count`` records nearest
    by pose among those more than ``exclude`` frames from it in its own video, or of another video,
    nearest first. Where fewer are usable by pose, the rest are the usable ones again, or with none
    the records nearest in time outside the window; a record with no other record is its own."""
    poses = np.asarray(poses, np.float32)
    video_ids, frame_indices = np.asarray(video_ids), np.asarray(frame_indices)
    n, count = len(poses), max(1, int(count))
    out = np.empty((n, count), np.int32)
    all_poses = jnp.asarray(poses)
    for start in range(0, n, QUERY_BLOCK):
        rows = np.arange(start, min(n, start + QUERY_BLOCK))
        distance = np.array(pose_distances(jnp.asarray(poses[rows]), all_poses))
        gap = np.abs(frame_indices[rows, None] - frame_indices[None, :])
        near = (video_ids[rows, None] == video_ids[None, :]) & (gap <= exclude)
        distance[near] = np.inf
        for r, row in enumerate(rows):
            usable = np.flatnonzero(np.isfinite(distance[r]))
            if len(usable):
                picks = usable[np.argsort(distance[r, usable], kind="stable")[:count]]
            else:
                outside = np.flatnonzero(~near[r])
                time_gap = np.where(video_ids[outside] == video_ids[row], gap[r, outside], np.iinfo(np.int64).max)
                picks = outside[np.argsort(time_gap, kind="stable")[:count]] if len(outside) else np.array([row])
            out[row] = np.resize(picks, count)
    return out


def exemplar_channels(frame: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The generator's exemplar input from a frame and its stick figure (same dtype): [.., H, W, 6]."""
    return np.concatenate([frame, label], axis=-1)


def empty_exemplar(plate: np.ndarray) -> np.ndarray:
    """The exemplar of no person: the background plate (uint8 [H, W, 3]) and no stick figure."""
    plate = np.asarray(plate, np.uint8)
    return exemplar_channels(plate, np.zeros_like(plate))


def for_poses(records: dict, keypoints, warp: str, plate=None) -> np.ndarray:
    """Training records (``holdout.records_at``: ``frame``/``label`` in [-1, 1], ``keypoints``) as the
    exemplars of poses ``keypoints`` [T, 137, 3]: float32 [T, H, W, 6] in [-1, 1], moved into them with
    ``warp="limbs"`` and faded to the model's ``plate`` ([1, H, W, 3] in [-1, 1]) when it has one, as in
    training."""
    channels = exemplar_channels(records["frame"], records["label"])
    if warp == "none":
        return channels
    u8 = np.asarray(images.to_uint8(channels))
    fill = None if plate is None else empty_exemplar(background.from_unit(plate))
    moved = np.stack([limb_warp.warped(u8[t], records["keypoints"][t], keypoints[t], warp, fill)
                      for t in range(len(u8))])
    return moved.astype(np.float32) / 127.5 - 1.0


class ExemplarBank:
    """A training split's frames as exemplars at a render size: ``lookup(keypoints)`` gives, for
    poses in that frame's pixels, their nearest training frames and stick figures as uint8
    [T, H, W, 6]; a pose no training pose is near (no person in the frame) gets the background
    plate (``plate``, uint8 [H, W, 3], when the caller has it, e.g. a model with ``model.background``;
    otherwise computed once from the split, filled as ``plate_fill``) and an empty stick figure. Decoded records are cached
    (``CACHE_RECORDS``), so a long video's exemplars, which repeat, are decoded once; safe to call
    from several threads. With ``warp="limbs"`` (``model.exemplar_warp``) each exemplar is moved into
    the pose it is looked up for (``limb_warp.warped``), fading to the ``plate`` when one is given."""

    def __init__(self, split, height: int, width: int, plate: np.ndarray | None = None,
                 cache_records: int = CACHE_RECORDS, warp: str = "none", plate_fill: str = "median"):
        self.split, self.height, self.width, self.warp = split, int(height), int(width), warp
        self.plate_fill = plate_fill  # the model's model.plate_fill, for a plate computed here
        self._poses = np.asarray(dataset.split_keypoints(split, self.height, self.width), np.float32)
        self.poses = jnp.asarray(self._poses)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cache_records = int(cache_records)
        self._lock = threading.Lock()
        self._empty: np.ndarray | None = None
        self._fill = plate is not None  # a model with a plate: warped exemplars fade to it, as in training
        if plate is not None:
            plate = np.asarray(plate, np.uint8)
            if plate.shape != (self.height, self.width, 3):
                raise ValueError(f"plate {plate.shape} is not the render size ({self.height}, {self.width}, 3)")
            self._empty = empty_exemplar(plate)

    def nearest(self, keypoints) -> np.ndarray:
        """The training record nearest by pose to each of ``keypoints`` [T, 137, 3]."""
        return nearest(keypoints, self.poses)

    def record(self, index: int) -> np.ndarray:
        """Training record ``index`` as an exemplar, uint8 [H, W, 6]."""
        index = int(index)
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        record = self.split.source[index]
        frame, _, label, _ = fit_record(np.asarray(record["frame"]), np.asarray(record["keypoints"], np.float32),
                                        self.height, self.width)
        value = exemplar_channels(frame, label)
        with self._lock:
            self._cache[index] = value
            while len(self._cache) > self._cache_records:
                self._cache.popitem(last=False)
        return value

    def empty(self) -> np.ndarray:
        """The exemplar of a frame without a person: the background plate, no stick figure."""
        with self._lock:
            if self._empty is None:
                self._empty = empty_exemplar(background.plate_from_split(self.split, self.height, self.width,
                                                                         self.plate_fill).image)
            return self._empty

    def images(self, indices) -> np.ndarray:
        """Training records ``indices`` as exemplars (-1: ``empty``), uint8 [T, H, W, 6]."""
        return np.stack([self.empty() if int(i) < 0 else self.record(i) for i in np.asarray(indices).reshape(-1)])

    def lookup(self, keypoints) -> np.ndarray:
        """The exemplars of poses ``keypoints`` [T, 137, 3]: uint8 [T, H, W, 6] (warped into them
        with ``warp="limbs"``)."""
        indices = self.nearest(keypoints)
        images = self.images(indices)
        if self.warp == "none":
            return images
        keypoints = np.asarray(keypoints, np.float32)
        fill = self.empty() if self._fill else None
        return np.stack([image if i < 0 else limb_warp.warped(image, self._poses[i], keypoints[t], self.warp, fill)
                         for t, (i, image) in enumerate(zip(indices, images))])
