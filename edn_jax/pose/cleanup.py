"""Temporal cleanup of keypoint sequences: fill short dropouts, then smooth.

Per-frame detectors flicker (points vanish for a frame or two) and jitter by a
few pixels; the generator sees both as motion that is not there. Everything here
works on [T, 137, 3] float32 arrays in the canonical layout and keeps its rule
that a missing point has confidence 0 and coordinates (0, 0): smoothing never
invents a point, and filling marks what it invented with a lowered confidence.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from edn_jax.errors import EdnError
from edn_jax.pose import layout

SMOOTHINGS = ("none", "median", "one_euro", "savgol")
# Keyword parameters clean_sequence passes on to each smoother.
_SMOOTHING_PARAMS = {
    "none": (),
    "median": ("window",),
    "one_euro": ("min_cutoff", "beta", "d_cutoff"),
    "savgol": ("window", "order"),
}


def _check_sequence(kps: np.ndarray) -> np.ndarray:
    kps = np.asarray(kps)
    if kps.ndim != 3 or kps.shape[1:] != (layout.NUM_KEYPOINTS, 3):
        raise EdnError(f"keypoint sequence has shape {kps.shape}, expected (T, {layout.NUM_KEYPOINTS}, 3)",
                       "pass poses in the canonical layout of edn_jax.pose.layout")
    return kps


def _check_int(name: str, value, minimum: int, odd: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
    if not ok or (odd and value % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise EdnError(f"{name}={value!r} is not valid", f"use {kind} >= {minimum}")
    return int(value)


def _check_positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= 0 if allow_zero else number > 0) or not np.isfinite(number):
        raise EdnError(f"{name}={value!r} is not valid",
                       f"use a finite number {'>= 0' if allow_zero else '> 0'}")
    return number


def fill_gaps(kps: np.ndarray, max_gap: int, fill_confidence: float = 0.5) -> np.ndarray:
    """Linearly interpolate runs of at most ``max_gap`` missing frames per point.

    Only gaps with a detection on both sides are filled (extrapolating a lost
    point is guesswork). A filled point gets confidence ``fill_confidence * min``
    of the two bounding detections, so consumers can tell it from a detection and
    confidence thresholds still apply to it.
    """
    kps = _check_sequence(kps)
    max_gap = _check_int("max_gap", max_gap, 0)
    fill_confidence = _check_positive("fill_confidence", fill_confidence)
    if fill_confidence > 1:
        raise EdnError(f"fill_confidence={fill_confidence!r} is not valid", "use a number in (0, 1]")
    out = np.array(kps, dtype=np.float32)
    T = len(out)
    present = out[..., 2] > 0                                          # [T, K]
    t = np.arange(T)[:, None]
    prev = np.maximum.accumulate(np.where(present, t, -1), axis=0)     # last present frame <= t
    nxt = np.minimum.accumulate(np.where(present, t, T)[::-1], axis=0)[::-1]  # first present >= t
    fill = ~present & (prev >= 0) & (nxt < T) & (nxt - prev - 1 <= max_gap)
    if not fill.any():
        return out
    ti, ki = np.nonzero(fill)
    p, n = prev[ti, ki], nxt[ti, ki]
    before = out[p, ki].astype(np.float64)
    after = out[n, ki].astype(np.float64)
    w = ((ti - p) / (n - p))[:, None]
    out[ti, ki, :2] = before[:, :2] + w * (after[:, :2] - before[:, :2])
    out[ti, ki, 2] = fill_confidence * np.minimum(before[:, 2], after[:, 2])
    return out


def median_smooth(kps: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred sliding median over time of each coordinate, against detector spikes.

    It removes spikes of up to ``window // 2`` frames and keeps linear motion.
    Only present points enter a median (a dropout's (0, 0) would drag its
    neighbours to the corner), windows are cut at the sequence ends, and missing
    points stay missing. Confidences are kept.
    """
    kps = _check_sequence(kps)
    window = _check_int("median window", window, 1, odd=True)
    out = np.array(kps, dtype=np.float32)
    half = window // 2
    for k in range(layout.NUM_KEYPOINTS):
        present = out[:, k, 2] > 0
        if not present.any():
            continue
        xy = np.where(present[:, None], out[:, k, :2], np.nan).astype(np.float64)
        padded = np.pad(xy, ((half, half), (0, 0)), constant_values=np.nan)
        windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # [T, 2, window]
        out[present, k, :2] = np.nanmedian(windows[present], axis=-1)
    return out


def _alpha(cutoff, fps: float):
    """Smoothing factor of a first-order low-pass at ``cutoff`` Hz sampled at ``fps``."""
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)


def one_euro_filter(kps: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.05,
                    d_cutoff: float = 1.0) -> np.ndarray:
    """Causal One-Euro filter (Casiez et al., CHI 2012) on each coordinate.

    A low-pass whose cutoff rises with speed: ``min_cutoff + beta * |speed|``
    (Hz, speed in pixels per second). Still points lose their jitter; fast
    limbs keep up with little lag. The defaults suit pixel coordinates of a
    dancer in 0.5-2k pixel frames: at 1 Hz a still point's few-pixel jitter is
    damped, while a hand at ~500 px/s gets a ~26 Hz cutoff. A missing point
    stays missing and the filter restarts from its next detection, so a point
    that reappears elsewhere is not dragged from its old position.
    """
    kps = _check_sequence(kps)
    fps = _check_positive("fps", fps)
    min_cutoff = _check_positive("min_cutoff", min_cutoff)
    beta = _check_positive("beta", beta, allow_zero=True)
    d_cutoff = _check_positive("d_cutoff", d_cutoff)
    out = np.array(kps, dtype=np.float32)
    a_d = _alpha(d_cutoff, fps)
    x_hat = np.zeros((layout.NUM_KEYPOINTS, 2))
    dx_hat = np.zeros((layout.NUM_KEYPOINTS, 2))
    was_present = np.zeros(layout.NUM_KEYPOINTS, bool)
    for t in range(len(out)):
        present = out[t, :, 2] > 0
        x = out[t, :, :2].astype(np.float64)
        restart = (present & ~was_present)[:, None]
        dx = np.where(restart, 0.0, (x - x_hat) * fps)
        dx_hat = np.where(restart, 0.0, a_d * dx + (1 - a_d) * dx_hat)
        a = _alpha(min_cutoff + beta * np.abs(dx_hat), fps)
        x_hat = np.where(restart, x, a * x + (1 - a) * x_hat)
        out[t, present, :2] = x_hat[present]
        was_present = present
    return out


def savgol_smooth(kps: np.ndarray, window: int = 9, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing of each run of consecutive detections of a point.

    Fits a local polynomial, so it keeps peaks of fast motion better than a
    median of the same width. Runs shorter than ``window`` are left as detected;
    missing points stay missing.
    """
    kps = _check_sequence(kps)
    window = _check_int("savgol window", window, 1, odd=True)
    order = _check_int("savgol order", order, 0)
    if order >= window:
        raise EdnError(f"savgol order={order} is not below window={window}",
                       "use an order smaller than the window")
    out = np.array(kps, dtype=np.float32)
    for k in range(layout.NUM_KEYPOINTS):
        present = np.concatenate([[False], out[:, k, 2] > 0, [False]])
        edges = np.flatnonzero(present[1:] != present[:-1])    # alternating run starts / stops
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start >= window:
                out[start:stop, k, :2] = savgol_filter(out[start:stop, k, :2].astype(np.float64),
                                                       window, order, axis=0)
    return out


def clean_sequence(kps: np.ndarray, fps: float, max_gap: int, smoothing: str = "none",
                   **params) -> np.ndarray:
    """Fill short gaps, then smooth: the cleanup applied between detection and rendering.

    ``params`` go to the chosen smoother (median: window; one_euro: min_cutoff,
    beta, d_cutoff; savgol: window, order), except ``fill_confidence``, which
    goes to :func:`fill_gaps`. Filling first lets the smoother see unbroken runs.
    """
    if smoothing not in SMOOTHINGS:
        raise EdnError(f"smoothing={smoothing!r} is not known", f"use one of {', '.join(SMOOTHINGS)}")
    fill_kwargs = {"fill_confidence": params.pop("fill_confidence")} if "fill_confidence" in params else {}
    unknown = sorted(set(params) - set(_SMOOTHING_PARAMS[smoothing]))
    if unknown:
        allowed = ", ".join(_SMOOTHING_PARAMS[smoothing] + ("fill_confidence",))
        raise EdnError(f"parameter(s) {', '.join(unknown)} do not apply to smoothing={smoothing!r}",
                       f"use only {allowed}")
    fps = _check_positive("fps", fps)
    kps = fill_gaps(kps, max_gap, **fill_kwargs)
    if smoothing == "median":
        return median_smooth(kps, **params)
    if smoothing == "one_euro":
        return one_euro_filter(kps, fps, **params)
    if smoothing == "savgol":
        return savgol_smooth(kps, **params)
    return kps
