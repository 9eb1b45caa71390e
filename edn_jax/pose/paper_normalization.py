"""Global pose normalization as the original release computes it (``graph_posenorm.py``).

``transfer.normalization = "paper"`` selects it; ``edn_jax.pose.normalization`` is the "robust"
variant. Per video, over every frame with a head point (the nose, else the midpoint of both ears)
and both ankles:

* ``h`` = distance from the head point to the ankle midpoint, ``toe`` = the larger ankle y;
* the close position ``maxtoe = max(toe)``; ``med = median(toe)``;
* the far position ("horizon"): among frames with ``0 < med - toe < median_frac * (maxtoe - med)``
  the largest ``d = med - toe``; ``horizon = med - d`` (``med`` when no frame qualifies).

Between a source and a target (``paper_transform``): if the source's range ``maxtoe - horizon``
is smaller than the target's, the target's range is shrunk to the source's size around its
midpoint. Then, for each video, ``h_close`` = the tallest ``h`` among frames whose toe is within
``band * (maxtoe - horizon)`` of ``maxtoe`` (of the possibly shrunk range, as the original looks
them up), ``h_far`` the same around ``horizon``; if the video's tallest ``h`` exceeds ``h_close``
by more than ``reset * max(h)``, ``h_close`` becomes that tallest ``h``. ``scale_close =
h_close_tgt / h_close_src``, ``scale_far = h_far_tgt / h_far_src``.

Per source frame, ``p = (toe - src_horizon) / (src_maxtoe - src_horizon)`` (not clipped), ``dy =
tgt_horizon + p * (tgt_maxtoe - tgt_horizon) - toe``, ``s = scale_far + p * (scale_close -
scale_far)``, and with the anchor ``a = (W / 2, the lower ankle y of the first frame with
statistics)``, fixed for the video, every point moves to ``x' = s x + (1 - s) a_x``, ``y' = s y +
(1 - s) a_y + dy``. A frame without statistics reuses the last ``(dy, s)`` (frames before the first
one take the first one's). The sequence then goes through a 7-frame sliding median: per point, if
the median confidence over the window is above the threshold, the median of the window's
confident entries, else missing (the window is cut at the ends of the sequence, which the
original drops instead).

Where the original would divide by zero or take the maximum of nothing, this module says what it
does instead: an empty height band takes the video's tallest ``h``; a source range of zero puts
every frame at the close position (``p = 1``); an unknown height gives a scale of 1; a source
without a single frame with statistics is left where it is. Pure ``jax.numpy`` with no Python
branching on data: jit and vmap apply. Points with confidence <= ``conf_threshold`` are missing
and come out as (0, 0, 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from edn_jax.pose import layout, normalization

_NOSE, _REAR, _LEAR = layout.B["Nose"], layout.B["REar"], layout.B["LEar"]
_ANKLES = np.asarray(layout.ANKLES)
MEDIAN_WINDOW = 7


class FrameMeasures(NamedTuple):
    """Per frame of one video: ``height`` (head point to ankle midpoint), ``toe`` (the larger ankle
    y), ``valid`` (head point and both ankles seen); ``height``/``toe`` are 0 where not valid."""

    height: jnp.ndarray
    toe: jnp.ndarray
    valid: jnp.ndarray


class VideoRange(NamedTuple):
    """A video's close (``maxtoe``) and far (``horizon``) floor positions, image y."""

    maxtoe: jnp.ndarray
    horizon: jnp.ndarray


def frame_measures(kps, conf_threshold=0.05) -> FrameMeasures:
    """``kps`` [T, 137, 3] -> the per-frame measures the statistics are made of."""
    seen = kps[..., 2] > conf_threshold
    nose_ok = seen[..., _NOSE]
    ears_ok = seen[..., _REAR] & seen[..., _LEAR]
    head = jnp.where(nose_ok[..., None], kps[..., _NOSE, :2], 0.5 * (kps[..., _REAR, :2] + kps[..., _LEAR, :2]))
    ankles = kps[..., _ANKLES, :2]
    valid = (nose_ok | ears_ok) & seen[..., _ANKLES].all(axis=-1)
    height = jnp.sqrt(jnp.sum((head - ankles.mean(axis=-2)) ** 2, axis=-1))
    toe = ankles[..., 1].max(axis=-1)
    return FrameMeasures(jnp.where(valid, height, 0.0), jnp.where(valid, toe, 0.0), valid)


def masked_median(values, mask, axis=0):
    """numpy's median of ``values`` where ``mask``, along ``axis`` (``normalization.masked_percentile``
    at 50: the mean of the two middle values for an even count); 0 where nothing is masked in."""
    v, m = jnp.moveaxis(values, axis, -1), jnp.moveaxis(mask, axis, -1)
    median = jax.vmap(lambda a, b: normalization.masked_percentile(a, b, 50.0))
    return median(v.reshape(-1, v.shape[-1]), m.reshape(-1, m.shape[-1])).reshape(v.shape[:-1])


def video_range(m: FrameMeasures, median_frac=0.5) -> VideoRange:
    """The close position (the largest toe) and the far one (the horizon rule above)."""
    maxtoe = jnp.max(jnp.where(m.valid, m.toe, -jnp.inf))
    maxtoe = jnp.where(m.valid.any(), maxtoe, 0.0)
    med = masked_median(m.toe, m.valid)
    d = med - m.toe
    candidates = m.valid & (d > 0) & (d < median_frac * (maxtoe - med))
    biggest = jnp.max(jnp.where(candidates, d, 0.0))
    return VideoRange(maxtoe, med - biggest)


def _shrunk(target: VideoRange, source: VideoRange) -> VideoRange:
    """The target's range shrunk to the source's size around its midpoint, if the source's is smaller."""
    src, tgt = source.maxtoe - source.horizon, target.maxtoe - target.horizon
    middle = 0.5 * (target.maxtoe + target.horizon)
    smaller = src < tgt
    return VideoRange(jnp.where(smaller, middle + 0.5 * src, target.maxtoe),
                      jnp.where(smaller, middle - 0.5 * src, target.horizon))


def band_heights(m: FrameMeasures, r: VideoRange, band=0.05, reset=0.1):
    """(h_far, h_close): the tallest ``h`` near the horizon and near maxtoe, within ``band`` of the
    range; h_close reset to the tallest ``h`` if that exceeds it by more than ``reset`` of it."""
    tallest = jnp.max(jnp.where(m.valid, m.height, 0.0))
    width = band * (r.maxtoe - r.horizon)

    def near(position):
        inside = m.valid & (jnp.abs(m.toe - position) <= width)
        return jnp.where(inside.any(), jnp.max(jnp.where(inside, m.height, 0.0)), tallest)

    h_far, h_close = near(r.horizon), near(r.maxtoe)
    h_close = jnp.where(tallest - h_close > reset * tallest, tallest, h_close)
    return h_far, h_close


def _last_valid(values, valid):
    """Each entry replaced by that of the last valid frame at or before it (the first valid one's
    before any)."""
    idx = jnp.arange(values.shape[0])
    last = lax.cummax(jnp.where(valid, idx, -1), axis=0)
    return values[jnp.where(last >= 0, last, jnp.argmax(valid))]


def paper_transform(src_kps, tgt_kps, width: int, conf_threshold=0.05, median_frac=0.5, band=0.05, reset=0.1,
                    stats_frames=None):
    """Per source frame ``(s [T], dy [T], anchor [2])``: ``x' = s x + (1 - s) a_x``, ``y' = s y + (1 - s) a_y
    + dy``. ``src_kps`` [T, 137, 3] and ``tgt_kps`` [N, 137, 3] (the target's training poses) are in
    one frame ``width`` pixels wide. ``stats_frames`` [T] (default all): the source frames its
    statistics come from (e.g. not poses copied over frames without a person)."""
    src, tgt = frame_measures(src_kps, conf_threshold), frame_measures(tgt_kps, conf_threshold)
    counted = src if stats_frames is None else src._replace(valid=src.valid & stats_frames)
    src_range = video_range(counted, median_frac)
    tgt_range = _shrunk(video_range(tgt, median_frac), src_range)
    src_far, src_close = band_heights(counted, src_range, band, reset)
    tgt_far, tgt_close = band_heights(tgt, tgt_range, band, reset)
    scale_far = normalization.height_ratio(tgt_far, src_far)
    scale_close = normalization.height_ratio(tgt_close, src_close)

    span = src_range.maxtoe - src_range.horizon
    p = jnp.where(span > 0, (src.toe - src_range.horizon) / jnp.where(span > 0, span, 1.0), 1.0)
    dy = tgt_range.horizon + p * (tgt_range.maxtoe - tgt_range.horizon) - src.toe
    s = scale_far + p * (scale_close - scale_far)
    any_valid = src.valid.any()
    s = jnp.where(any_valid, _last_valid(s, src.valid), 1.0)
    dy = jnp.where(any_valid, _last_valid(dy, src.valid), 0.0)
    first = jnp.argmax(src.valid)
    anchor = jnp.stack([jnp.float32(width / 2), src_kps[first, _ANKLES, 1].max()])
    return s, dy, anchor


def sliding_median(kps, conf_threshold=0.05, window=MEDIAN_WINDOW):
    """The original's ``getmedians_adapt`` over a centred ``window`` of frames, per point: where the
    window's median confidence is above ``conf_threshold``, the median of its confident entries
    (x, y and confidence each), else (0, 0, 0)."""
    t = kps.shape[0]
    offsets = jnp.arange(window) - window // 2
    idx = jnp.arange(t)[:, None] + offsets[None]          # [T, window]
    inside = (idx >= 0) & (idx < t)
    stacked = kps[jnp.clip(idx, 0, t - 1)]               # [T, window, K, 3]
    conf = stacked[..., 2]
    in_window = jnp.broadcast_to(inside[..., None], conf.shape)
    keep = masked_median(conf, in_window, axis=1) > conf_threshold
    confident = in_window & (conf > conf_threshold)
    med = jnp.stack([masked_median(stacked[..., c], confident, axis=1) for c in range(3)], axis=-1)
    return jnp.where(keep[..., None], med, 0.0)


def normalize_sequence_paper(src_kps, tgt_kps, width: int, conf_threshold=0.05, median_frac=0.5, band=0.05,
                             reset=0.1, window=MEDIAN_WINDOW, stats_frames=None):
    """A source sequence [T, 137, 3] in the target's scale and place, then the sliding median."""
    s, dy, anchor = paper_transform(src_kps, tgt_kps, width, conf_threshold, median_frac, band, reset, stats_frames)
    xy = s[:, None, None] * src_kps[..., :2] + ((1 - s)[:, None] * anchor + jnp.stack(
        [jnp.zeros_like(dy), dy], axis=-1))[:, None, :]
    present = src_kps[..., 2:] > conf_threshold
    moved = jnp.where(present, jnp.concatenate([xy, src_kps[..., 2:]], axis=-1), 0.0)
    return sliding_median(moved, conf_threshold, window)
