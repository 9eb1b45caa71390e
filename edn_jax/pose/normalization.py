"""Global pose normalization (Chan et al. 2019, Sec. 3.2).

A source person's keypoints are mapped into the target's body scale and place
in frame, so that the generator only ever sees poses shaped like its training
video. Per video, ``pose_statistics`` finds the far and close ankle heights in
the image (small y = far from the camera, large y = close) and the body height
at each. Per frame, ``frame_transform`` locates the source ankle between its own
far and close positions (``alpha`` in [0, 1]) and linearly interpolates scale
and placement between the target's far and close values. Horizontally, the
source's travel (its ankles' left-right range) is fit into the range where the
target was seen, as depth is mapped vertically (``travel_kept``), and
``keep_in_frame`` moves a figure that would leave the frame back inside it.

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
    fields are placeholders). ``ankle_left``/``ankle_right`` bound the horizontal
    ankle positions (the same percentiles as far/close): where the person travels.
    """

    ankle_far: jnp.ndarray
    ankle_close: jnp.ndarray
    height_far: jnp.ndarray
    height_close: jnp.ndarray
    center_x: jnp.ndarray
    num_valid: jnp.ndarray
    ankle_left: jnp.ndarray
    ankle_right: jnp.ndarray


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
    median x of the ankle midpoint, ``ankle_left``/``ankle_right`` its
    ``percentile`` and ``100 - percentile`` percentiles.
    """
    ankle_y, ankle_ok = frame_ankle_y(keypoints, conf_threshold)
    height, height_ok = frame_height(keypoints, conf_threshold)
    far = masked_percentile(ankle_y, ankle_ok, percentile)
    close = masked_percentile(ankle_y, ankle_ok, 100.0 - percentile)
    width = jnp.maximum(band * (close - far), min_band_px)
    mean_height = _masked_mean(height, height_ok, 0.0)
    height_far = _masked_mean(height, height_ok & (jnp.abs(ankle_y - far) <= width), mean_height)
    height_close = _masked_mean(height, height_ok & (jnp.abs(ankle_y - close) <= width), mean_height)
    ankle_x = _frame_ankle_x(keypoints, conf_threshold)
    center_x = masked_percentile(ankle_x, ankle_ok, 50.0)
    left = masked_percentile(ankle_x, ankle_ok, percentile)
    right = masked_percentile(ankle_x, ankle_ok, 100.0 - percentile)
    return PoseStats(*(jnp.asarray(v, jnp.float32) for v in (
        far, close, height_far, height_close, center_x, ankle_ok.sum(), left, right)))


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


def _mean_ratio(src_stats, tgt_stats):
    """The scale halfway between far and close: the source's typical size in the target's frame."""
    return 0.5 * (height_ratio(tgt_stats.height_far, src_stats.height_far)
                  + height_ratio(tgt_stats.height_close, src_stats.height_close))


def travel_kept(src_stats, tgt_stats):
    """The fraction of the source's horizontal travel kept when it is fit into the target's: 1 when
    the source's ankle range, scaled to the target's size, fits in the target's ankle range
    (``ankle_left``..``ankle_right``), else target range / scaled source range (0 for a target that
    never moved sideways)."""
    scaled = _mean_ratio(src_stats, tgt_stats) * (src_stats.ankle_right - src_stats.ankle_left)
    target = jnp.maximum(tgt_stats.ankle_right - tgt_stats.ankle_left, 0.0)
    return jnp.where(scaled > target, target / jnp.where(scaled > 0, scaled, 1.0), 1.0)


def _moving_average(values, window: int):
    """Centred moving average over ``window`` frames (odd; edges repeat the end values)."""
    if window <= 1:
        return values
    half = window // 2
    padded = jnp.concatenate([jnp.repeat(values[:1], half), values, jnp.repeat(values[-1:], half)])
    return jnp.convolve(padded, jnp.full((window,), 1.0 / window, values.dtype), mode="valid")


def frame_transform(src_kps, src_stats, tgt_stats, conf_threshold=0.05,
                    clip=True, min_range=0.03, fit_travel=False, travel_window=1):
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

    With ``fit_travel`` the horizontal travel is fit into the target's too: the
    frame's ankle x, averaged over ``travel_window`` frames (the travel, not the
    steps), moves from ``src.center_x`` by ``travel_kept`` times its scaled
    distance, and the whole range is then shifted, if need be, to lie inside the
    target's ``ankle_left``..``ankle_right``. The body keeps its shape and size; a
    source whose travel fits the target's range moves exactly as without it.

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
    tx = jnp.broadcast_to(tgt_stats.center_x - scale * src_stats.center_x, ankle_y.shape)
    if fit_travel:
        travel = _moving_average(_nearest_valid(_frame_ankle_x(src_kps, conf_threshold), ankle_ok), travel_window)
        kept = travel_kept(src_stats, tgt_stats)
        mean_scale = _mean_ratio(src_stats, tgt_stats)
        lo = tgt_stats.center_x + kept * mean_scale * (src_stats.ankle_left - src_stats.center_x)
        hi = tgt_stats.center_x + kept * mean_scale * (src_stats.ankle_right - src_stats.center_x)
        shift = jnp.maximum(tgt_stats.ankle_left - lo, 0.0) - jnp.maximum(hi - tgt_stats.ankle_right, 0.0)
        placed = tgt_stats.center_x + kept * scale * (travel - src_stats.center_x) + shift
        tx = jnp.where(ankle_ok.any(), placed - scale * travel, tx)
    ty = tgt_ref - scale * src_ref
    return scale, jnp.stack([tx, ty], axis=-1)


def keep_in_frame(kps, height, width, margin=0.0, conf_threshold=0.05):
    """``(kps moved, moved [T] bool)``: each pose ``[T, 137, 3]`` whose present points come closer than
    ``margin`` px to an edge of the ``height`` x ``width`` frame is shifted back inside (centred where
    it is larger than the frame); missing points stay (0, 0, 0). The shift is continuous in the pose,
    so a figure slides along an edge instead of jumping."""
    present = _present(kps, conf_threshold)
    any_point = present.any(axis=-1)

    def shift(coord, size):
        lo = jnp.min(jnp.where(present, coord, jnp.inf), axis=-1)
        hi = jnp.max(jnp.where(present, coord, -jnp.inf), axis=-1)
        first, last = margin, size - 1.0 - margin
        clamp = jnp.maximum(first - lo, 0.0) - jnp.maximum(hi - last, 0.0)
        centred = 0.5 * (first + last) - 0.5 * (lo + hi)
        return jnp.where(any_point, jnp.where(hi - lo > last - first, centred, clamp), 0.0)

    offset = jnp.stack([shift(kps[..., 0], width), shift(kps[..., 1], height)], axis=-1)
    moved = jnp.concatenate([kps[..., :2] + offset[..., None, :], kps[..., 2:]], axis=-1)
    return jnp.where(present[..., None], moved, 0.0), jnp.any(offset != 0, axis=-1)


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
                       clip=True, min_range=0.03, fit_travel=False, travel_window=1):
    """Map a source sequence ``[T, 137, 3]`` into the target's scale and placement.

    ``frame_transform`` applied to all 137 points by ``apply_transform``.
    """
    scale, translation = frame_transform(src_kps, src_stats, tgt_stats,
                                         conf_threshold, clip, min_range, fit_travel, travel_window)
    return apply_transform(src_kps, scale, translation, conf_threshold)


def stats_to_dict(stats: PoseStats) -> dict[str, float]:
    """Plain floats by field name, for a dataset's metadata JSON."""
    return {name: float(value) for name, value in stats._asdict().items()}


# Fields added after datasets were built without them: read as NaN (``has_travel_range`` is then
# False and the reader recomputes the statistics from the dataset's poses).
TRAVEL_FIELDS = ("ankle_left", "ankle_right")


def has_travel_range(stats: PoseStats) -> bool:
    return bool(np.isfinite(float(stats.ankle_left)) and np.isfinite(float(stats.ankle_right)))


def stats_from_dict(d) -> PoseStats:
    """Inverse of ``stats_to_dict``; every field must be present but ``TRAVEL_FIELDS`` (NaN when absent)."""
    d = {name: float("nan") for name in TRAVEL_FIELDS} | dict(d)
    missing = [name for name in PoseStats._fields if name not in d]
    if missing:
        raise EdnError(f"pose statistics lack {', '.join(missing)}",
                       "recompute them with pose_statistics (rebuild the dataset)")
    return PoseStats(*(jnp.asarray(d[name], jnp.float32) for name in PoseStats._fields))
