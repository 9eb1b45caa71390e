"""Global pose normalization (Chan et al. 2019, Sec. 3.2).

A source person's keypoints are mapped into the target's body scale and place
in frame, so that the generator only ever sees poses shaped like its training
video. Per video, ``pose_statistics`` finds the far and close ankle heights in
the image (small y = far from the camera, large y = close) and the body height
at each. Per frame, ``frame_transform`` locates the source ankle between its own
far and close positions (``alpha`` in [0, 1]) and linearly interpolates scale
and placement between the target's far and close values.

Everything is pure ``jax.numpy`` without Python branching on data, so it can be
jitted and vmapped. A point whose confidence is <= ``conf_threshold`` counts as
missing: it is left out of every statistic and comes out as (0, 0, 0), the
layout's spelling of "missing"; present points keep their confidence.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from edn_jax.errors import EdnError
from edn_jax.pose import layout

_ANKLES = np.asarray(layout.ANKLES)
_HEAD = np.asarray(layout.HEAD)
_NECK = layout.B["Neck"]


class PoseStats(NamedTuple):
    """Per-video statistics of one person; a pytree of float32 scalars.

    ``ankle_far``/``ankle_close`` are image y of the ankle far from / close to
    the camera (``ankle_far <= ankle_close``), ``height_far``/``height_close``
    the subject's height (ankle to top of head, pixels) there, ``center_x`` the
    median horizontal ankle position and ``num_valid`` the number of frames with
    a visible ankle (a float so that the tuple is uniform; 0 means the other
    fields are placeholders).
    """

    ankle_far: jnp.ndarray
    ankle_close: jnp.ndarray
    height_far: jnp.ndarray
    height_close: jnp.ndarray
    center_x: jnp.ndarray
    num_valid: jnp.ndarray


def _present(kps, conf_threshold):
    return kps[..., 2] > conf_threshold


def frame_ankle_y(kps, conf_threshold=0.05):
    """Per-frame floor contact y: the max y of the present ankles.

    The lower ankle in the image is the foot on the floor, which is what tells
    the distance to the camera while the other foot is lifted. ``kps`` is
    ``[..., 137, 3]``; returns ``(y, valid)`` of shape ``[...]``, y = 0 where
    no ankle is present.
    """
    ankles = kps[..., _ANKLES, :]
    seen = _present(ankles, conf_threshold)
    valid = seen.any(axis=-1)
    y = jnp.max(jnp.where(seen, ankles[..., 1], -jnp.inf), axis=-1)
    return jnp.where(valid, y, 0.0), valid


def _frame_ankle_x(kps, conf_threshold):
    ankles = kps[..., _ANKLES, :]
    seen = _present(ankles, conf_threshold)
    total = jnp.sum(jnp.where(seen, ankles[..., 0], 0.0), axis=-1)
    return total / jnp.maximum(seen.sum(axis=-1), 1)


def frame_height(kps, conf_threshold=0.05):
    """Per-frame subject height: floor ankle y minus the top of the head.

    The head top is the smallest y over the present HEAD points (nose, eyes,
    ears), falling back to the Neck when none is visible, so a turned head still
    gives a height. Valid only when ankle and head/neck exist and the height is
    positive; returns ``(height, valid)``, height = 0 where invalid.
    """
    ankle_y, ankle_ok = frame_ankle_y(kps, conf_threshold)
    head = kps[..., _HEAD, :]
    head_seen = _present(head, conf_threshold)
    head_top = jnp.min(jnp.where(head_seen, head[..., 1], jnp.inf), axis=-1)
    neck_seen = _present(kps[..., _NECK, :], conf_threshold)
    has_head = head_seen.any(axis=-1)
    top = jnp.where(has_head, head_top, kps[..., _NECK, 1])
    height = ankle_y - top
    valid = ankle_ok & (has_head | neck_seen) & (height > 0)
    return jnp.where(valid, height, 0.0), valid


def masked_percentile(values, mask, q):
    """numpy's linear-interpolation percentile over ``values[mask]``; 0 if empty."""
    n = mask.sum()
    ranked = jnp.sort(jnp.where(mask, values, jnp.inf))
    ranked = jnp.where(jnp.arange(values.shape[0]) < n, ranked, 0.0)
    last = jnp.maximum(n - 1, 0)
    pos = jnp.clip(q / 100.0 * last, 0.0, last)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, last)
    return ranked[lo] + (pos - lo) * (ranked[hi] - ranked[lo])


def _masked_mean(values, mask, fallback):
    count = mask.sum()
    mean = jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1)
    return jnp.where(count > 0, mean, fallback)


def pose_statistics(keypoints, conf_threshold=0.05, percentile=2.0,
                    band=0.05, min_band_px=3.0):
    """Far/close ankle y, heights there and horizontal centre of one video.

    ``keypoints`` is ``[T, 137, 3]``. Frames without an ankle are ignored.
    Far/close ankle are the ``percentile`` and ``100 - percentile`` percentiles
    (in percent; 0 = exact min/max) of the frame ankle y, so a few detector
    outliers do not set the range. Each height is the mean height of the frames
    whose ankle lies within ``max(band * range, min_band_px)`` of that ankle
    value: averaging a band rather than taking one frame smooths detector noise
    and guarantees a result for a stationary person, where both bands hold all
    frames and both heights equal the overall mean. An empty band falls back to
    the overall mean height (0 when no frame has a height). ``center_x`` is the
    median x of the ankle midpoint.
    """
    ankle_y, ankle_ok = frame_ankle_y(keypoints, conf_threshold)
    height, height_ok = frame_height(keypoints, conf_threshold)
    far = masked_percentile(ankle_y, ankle_ok, percentile)
    close = masked_percentile(ankle_y, ankle_ok, 100.0 - percentile)
    width = jnp.maximum(band * (close - far), min_band_px)
    mean_height = _masked_mean(height, height_ok, 0.0)
    height_far = _masked_mean(height, height_ok & (jnp.abs(ankle_y - far) <= width), mean_height)
    height_close = _masked_mean(height, height_ok & (jnp.abs(ankle_y - close) <= width), mean_height)
    center_x = masked_percentile(_frame_ankle_x(keypoints, conf_threshold), ankle_ok, 50.0)
    return PoseStats(*(jnp.asarray(v, jnp.float32) for v in (
        far, close, height_far, height_close, center_x, ankle_ok.sum())))


def _nearest_valid(values, valid):
    """``values`` with each invalid entry replaced by that of the nearest valid one.

    Ties go to the earlier frame. Uses running max/min of valid indices, so
    it needs no loop over frames.
    """
    n = values.shape[0]
    idx = jnp.arange(n)
    prev = lax.cummax(jnp.where(valid, idx, -1), axis=0)
    nxt = lax.cummin(jnp.where(valid, idx, n), axis=0, reverse=True)
    unreachable = 2 * n + 1
    d_prev = jnp.where(prev >= 0, idx - prev, unreachable)
    d_next = jnp.where(nxt < n, nxt - idx, unreachable)
    source = jnp.clip(jnp.where(d_prev <= d_next, prev, nxt), 0, n - 1)
    return values[source]


def height_ratio(target, source):
    """target / source height, or 1 where either is unknown (0)."""
    ok = (target > 0) & (source > 0)
    return jnp.where(ok, target / jnp.where(ok, source, 1.0), 1.0)


def frame_transform(src_kps, src_stats, tgt_stats, conf_threshold=0.05,
                    clip=True, min_range=0.03):
    """Per-frame ``(scale [T], translation [T, 2])`` of ``src_kps [T, 137, 3]``: ``xy' = scale * xy + translation``.

    ``alpha = (a - src.ankle_far) / (src.ankle_close - src.ankle_far)`` for the
    frame's floor ankle y ``a``, clipped to [0, 1] when ``clip``. Then
    ``scale = lerp(tgt.height_far / src.height_far, tgt.height_close /
    src.height_close, alpha)`` and the source reference ``lerp(src.ankle_far,
    src.ankle_close, alpha)`` (= ``a`` inside the range) is sent to the target
    reference ``lerp(tgt.ankle_far, tgt.ankle_close, alpha)``; x is scaled about
    ``src.center_x`` and moved to ``tgt.center_x``. Beyond the clipped range the
    source's motion thus continues at the end scale instead of freezing, and a
    source equal to its target maps exactly onto itself.

    Frames without an ankle take ``a`` from the nearest frame that has one
    (earlier frame on ties). ``alpha = 0.5`` (mid-range, mid-scale) when no
    frame has an ankle or the source ankle range is at most ``min_range`` times
    the source's mean height: such a range is detector jitter of a stationary
    person, and spreading it over the target's whole far-close range would make
    the output jump. An unknown height (0) gives a ratio of 1.
    """
    ankle_y, ankle_ok = frame_ankle_y(src_kps, conf_threshold)
    ankle_y = _nearest_valid(ankle_y, ankle_ok)
    src_range = src_stats.ankle_close - src_stats.ankle_far
    moving = src_range > min_range * 0.5 * (src_stats.height_far + src_stats.height_close)
    alpha = (ankle_y - src_stats.ankle_far) / jnp.where(moving, src_range, 1.0)
    alpha = jnp.where(clip, jnp.clip(alpha, 0.0, 1.0), alpha)
    alpha = jnp.where(moving & ankle_ok.any(), alpha, 0.5)

    ratio_far = height_ratio(tgt_stats.height_far, src_stats.height_far)
    ratio_close = height_ratio(tgt_stats.height_close, src_stats.height_close)
    scale = ratio_far + alpha * (ratio_close - ratio_far)
    src_ref = src_stats.ankle_far + alpha * src_range
    tgt_ref = tgt_stats.ankle_far + alpha * (tgt_stats.ankle_close - tgt_stats.ankle_far)
    tx = tgt_stats.center_x - scale * src_stats.center_x
    ty = tgt_ref - scale * src_ref
    return scale, jnp.stack([jnp.broadcast_to(tx, ty.shape), ty], axis=-1)


def apply_transform(kps, scale, translation, conf_threshold=0.05):
    """``xy' = scale * xy + translation`` on present points; missing ones become (0, 0, 0).

    ``kps`` is ``[..., K, 3]``, ``scale`` ``[...]`` and ``translation`` ``[..., 2]``
    (one transform per pose).
    """
    scale = jnp.asarray(scale)
    xy = scale[..., None, None] * kps[..., :2] + translation[..., None, :]
    moved = jnp.concatenate([xy, kps[..., 2:]], axis=-1)
    return jnp.where(_present(kps, conf_threshold)[..., None], moved, 0.0)


def normalize_sequence(src_kps, src_stats, tgt_stats, conf_threshold=0.05,
                       clip=True, min_range=0.03):
    """Map a source sequence ``[T, 137, 3]`` into the target's scale and placement.

    ``frame_transform`` applied to all 137 points by ``apply_transform``.
    """
    scale, translation = frame_transform(src_kps, src_stats, tgt_stats,
                                         conf_threshold, clip, min_range)
    return apply_transform(src_kps, scale, translation, conf_threshold)


def stats_to_dict(stats: PoseStats) -> dict[str, float]:
    """Plain floats by field name, for a dataset's metadata JSON."""
    return {name: float(value) for name, value in stats._asdict().items()}


def stats_from_dict(d) -> PoseStats:
    """Inverse of ``stats_to_dict``; every field must be present."""
    missing = [name for name in PoseStats._fields if name not in d]
    if missing:
        raise EdnError(f"pose statistics lack {', '.join(missing)}",
                       "recompute them with pose_statistics (rebuild the dataset)")
    return PoseStats(*(jnp.asarray(d[name], jnp.float32) for name in PoseStats._fields))
