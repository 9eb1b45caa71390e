"""Plots people look at: evaluate mode's per-frame scores of the model next to its baselines."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edn_jax.runtime.fileio import atomic_path

# (score, title, higher is better) in panel order; panels without any value are left out.
PANELS = (("ssim", "whole-frame SSIM", True), ("body_ssim", "body-crop SSIM", True),
          ("body_lpips", "body-crop LPIPS", False), ("face_lpips", "face-crop LPIPS", False))
SERIES = (("generated", "generated", "tab:blue"), ("mean_train_frame", "mean training frame", "tab:gray"),
          ("nearest_train_frame", "nearest training frame by pose", "tab:orange"))


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows], np.float64)


def per_frame_scores(rows: list[dict], path: str, title: str = "") -> None:
    """A PNG of each held-out frame's scores (``evaluate`` rows: ``ssim``, ``ssim_mean_train_frame``, ...)
    for the model and both baselines, one panel per score, frames in the rows' order (video, frame)."""
    panels = [p for p in PANELS if any(np.isfinite(_column(rows, f"{p[0]}")))]
    fig = Figure(figsize=(7.5, 2.3 * len(panels) + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    x = np.arange(len(rows))
    videos = np.array([r["video"] for r in rows])
    starts = np.flatnonzero(np.r_[True, videos[1:] != videos[:-1]])
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (score, name, higher) in zip(axes, panels):
        for series, label, colour in SERIES:
            key = score if series == "generated" else f"{score}_{series}"
            values = _column(rows, key)
            if np.isfinite(values).any():
                ax.plot(x, values, marker=".", color=colour, label=f"{label} (mean {np.nanmean(values):.3f})")
        for s in starts[1:]:
            ax.axvline(s - 0.5, color="k", lw=0.5, ls=":")
        ax.set_ylabel(name + (" (higher is better)" if higher else " (lower is better)"), fontsize=7)
        ax.legend(fontsize=6, loc="best")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    ticks = x if len(x) <= 30 else x[:: max(1, len(x) // 15)]
    ax.set_xticks(ticks, [str(rows[t]["frame"]) for t in ticks])
    ax.set_xlabel("held-out frame (frame number in its video)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
