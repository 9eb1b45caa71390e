"""Global pose normalization against a known answer: the paper's algorithm vs the robust variant.

A pinhole camera looks at a floor: a person at depth Z and lateral position X stands with the
ankles at image y = v0 + f Hc / Z and x = cx + f X / Z, and is f b / Z pixels tall (b: body
height, Hc: camera height). Every dancer's lateral path is centred on its camera's axis. The target is filmed by one camera, walking between two depths; each source by another
camera, with another body size, doing other dance moves (the synthetic subject's body, re-placed
by this camera). The answer for a source frame is what a perfect normalization draws: the
source's pose and depth, with its lateral position scaled by the body ratio, filmed by the
target's camera with the target's body (a source camera panned sideways, cx off the frame's
centre, is a property of that camera: the answer is centred all the same). Detector-like faults are injected into the source only
(the answer stays clean): outlier frames, missing ankles, a jump of a block of frames.

Each cell is the mean distance (px, 512x512 frames) over the body points of every source frame
between the normalized source and the answer.

A second table takes a source who walks across a wide frame, as an outdoor clip does, far past
where the target was ever seen: the normalization with the source's full travel against the one
that fits the travel into the target's (``transfer.travel``). Its answer is the pose and depth the
target's camera would film, with the horizontal place left open: per frame, the share of figures
inside the frame, the share whose ankles stand inside the target's ankle range (its 2nd-98th
percentiles, +-1% of the frame), and the body error with each frame's horizontal offset removed
(so fitting the travel must not bend or resize the pose). Prints markdown tables and one JSON
object. Run from the repository root:

  .venv/bin/python -m benchmarks.normalization_accuracy
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from edn_jax import synthetic  # noqa: E402
from edn_jax.pose import layout, normalization, paper_normalization  # noqa: E402
from edn_jax.synthetic import motion  # noqa: E402

_SOURCE_FRAMES = flags.DEFINE_integer("source_frames", 300, "Frames per source.")
_TARGET_FRAMES = flags.DEFINE_integer("target_frames", 600, "Frames of the target's training video.")

SIZE = 512
BODY = np.arange(layout.BODY.start, layout.BODY.stop)


class Camera(NamedTuple):
    focal: float     # px
    horizon: float   # v0: image y of the horizon
    height: float    # Hc: camera height over the floor (m)
    body: float      # b: the person's height (m)
    cx: float = SIZE / 2  # the principal point's x: off the frame's centre for a camera panned sideways


TARGET = Camera(focal=400.0, horizon=100.0, height=1.5, body=1.7)
SOURCES = {  # another camera and body, the same depths walked
    "near/far walk, smaller and higher in frame": Camera(focal=300.0, horizon=180.0, height=1.2, body=1.5),
    "near/far walk, larger and lower": Camera(focal=520.0, horizon=60.0, height=1.6, body=1.8),
    "near/far walk, camera panned 60 px": Camera(focal=300.0, horizon=180.0, height=1.2, body=1.5, cx=SIZE / 2 + 60),
}
NEAR, FAR = 3.0, 6.0


def unit_poses(seed: int, frames: int) -> np.ndarray:
    """The synthetic subject's poses relative to its floor point, in units of its standing height."""
    kps = synthetic.synthetic_keypoints(seed, frames, SIZE, SIZE, 30.0)
    horizon = motion.horizon_y(SIZE, SIZE)
    ankles = kps[:, list(layout.ANKLES), :2]
    floor = np.stack([ankles[..., 0].mean(-1), ankles[..., 1].max(-1)], axis=-1)
    scale = floor[:, 1] - horizon
    height = np.median((floor[:, 1] - kps[:, layout.B["Nose"], 1]) / scale) * 1.07  # nose to head top
    out = kps.copy()
    out[..., :2] = (kps[..., :2] - floor[:, None]) / (scale * height)[:, None, None]
    return out


def depth_path(frames: int, periods: float, phase: float, near=NEAR, far=FAR) -> tuple[np.ndarray, np.ndarray]:
    """(Z, X) per frame: walking between ``near`` and ``far`` and side to side (m)."""
    t = np.linspace(0.0, 1.0, frames)
    z = near + (far - near) * 0.5 * (1 - np.cos(2 * np.pi * periods * t + phase))
    x = 0.6 * np.sin(2 * np.pi * 0.7 * periods * t + 2 * phase)
    return z, x - np.median(x)  # centred on the camera's axis: the lateral place is the camera's


def film(unit: np.ndarray, z: np.ndarray, x: np.ndarray, cam: Camera) -> np.ndarray:
    """The poses placed at (X, Z) by ``cam``; missing points stay (0, 0, 0)."""
    floor = np.stack([cam.cx + cam.focal * x / z, cam.horizon + cam.focal * cam.height / z], axis=-1)
    px = cam.focal * cam.body / z
    out = unit.copy()
    out[..., :2] = floor[:, None] + unit[..., :2] * px[:, None, None]
    return np.where(unit[..., 2:] > 0, out, 0.0).astype(np.float32)


def inject(kps: np.ndarray, fault: str, seed: int = 0) -> np.ndarray:
    """Detector-like faults: 5% outlier frames (the pose thrown by a third of its height), 10% of
    frames with one or both ankles missing, or a jump (15 frames moved by a fifth of the height)."""
    rng = np.random.default_rng(seed)
    out = kps.copy()
    t = len(kps)
    height = np.median(kps[:, list(layout.ANKLES), 1].max(-1) - kps[:, layout.B["Nose"], 1])
    present = out[..., 2:] > 0
    if fault == "outliers":
        for i in rng.choice(t, max(1, t // 20), replace=False):
            out[i, :, :2] += rng.uniform(-1, 1, 2) * height / 3 * present[i]
    elif fault == "missing ankles":
        for i in rng.choice(t, max(1, t // 10), replace=False):
            out[i, list(layout.ANKLES) if rng.random() < 0.5 else [layout.ANKLES[rng.integers(2)]]] = 0.0
    elif fault == "a jump":
        start = t // 3
        out[start:start + 15, :, :2] += np.float32([0.2, 0.2]) * height * present[start:start + 15]
    elif fault != "none":
        raise ValueError(fault)
    return out


def normalized(method: str, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """The source normalized to the target as transfer mode does it ("robust": with the source's full
    travel; "robust, travel fit": the travel fit into the target's and every figure kept in frame)."""
    if method == "paper":
        return np.asarray(paper_normalization.normalize_sequence_paper(src, tgt, SIZE))
    stats_src, stats_tgt = normalization.pose_statistics(src), normalization.pose_statistics(tgt)
    fit = method == "robust, travel fit"
    out = normalization.normalize_sequence(src, stats_src, stats_tgt, fit_travel=fit, travel_window=15 if fit else 1)
    return np.asarray(normalization.keep_in_frame(out, SIZE, SIZE, MARGIN)[0] if fit else out)


MARGIN = 8.0  # px the kept-in-frame figure stays from the edge (two stick widths at 512x512)
WIDE = Camera(focal=300.0, horizon=180.0, height=1.2, body=1.5)


def wide_walk(source_frames: int, target_frames: int):
    """(source keypoints, answer, target training keypoints): a source walking 8 m across its
    camera's view (x from -4 m to +4 m and back) at the middle depths, the target as in ``scenarios``."""
    z_t, x_t = depth_path(target_frames, periods=4.0, phase=0.0)
    target = film(unit_poses(0, target_frames), z_t, x_t, TARGET)
    unit = unit_poses(5, source_frames)
    t = np.linspace(0.0, 1.0, source_frames)
    z = 4.5 + 0.5 * np.sin(2 * np.pi * t)
    x = 4.0 * np.sin(2 * np.pi * t - np.pi / 2)
    source = film(unit, z, x, WIDE)
    return source, film(unit, z, np.zeros_like(x), TARGET), target


def placement(out: np.ndarray, truth: np.ndarray, target: np.ndarray) -> dict:
    """The wide walk's measures (module docstring) of a normalized sequence."""
    present = out[..., 2] > 0
    xs = np.where(present, out[..., 0], np.nan)
    ys = np.where(present, out[..., 1], np.nan)
    inside = ((np.nanmin(xs, 1) >= 0) & (np.nanmax(xs, 1) <= SIZE - 1)
              & (np.nanmin(ys, 1) >= 0) & (np.nanmax(ys, 1) <= SIZE - 1))
    stats = normalization.pose_statistics(target)
    ankle_x = np.nanmean(np.where(present[:, list(layout.ANKLES)], out[:, list(layout.ANKLES), 0], np.nan), 1)
    tol = 0.01 * SIZE
    in_range = (ankle_x >= float(stats.ankle_left) - tol) & (ankle_x <= float(stats.ankle_right) + tol)
    aligned = out.copy()  # each frame's body moved sideways onto the answer's
    offset = np.nanmean(np.where(present[:, BODY], out[:, BODY, 0], np.nan), 1) - np.nanmean(
        np.where(truth[:, BODY, 2] > 0, truth[:, BODY, 0], np.nan), 1)
    aligned[..., 0] = np.where(present, out[..., 0] - offset[:, None], 0.0)
    return {"figures_inside_frame": float(inside.mean()), "ankles_in_target_range": float(in_range.mean()),
            "pose_error_px": body_error(aligned, truth),
            "travel_px": float(np.nanmax(ankle_x) - np.nanmin(ankle_x)),
            "target_range_px": float(stats.ankle_right - stats.ankle_left)}


def run_wide_walk(source_frames: int, target_frames: int) -> dict[str, dict]:
    src, truth, tgt = wide_walk(source_frames, target_frames)
    return {m: placement(normalized(m, src, tgt), truth, tgt) for m in ("robust", "robust, travel fit")}


def body_error(out: np.ndarray, truth: np.ndarray) -> float:
    """Mean px distance over the body points present in the answer (a point left missing counts as
    the distance to where the answer has it from the frame's present points' mean)."""
    a, b = out[:, BODY], truth[:, BODY]
    present = b[..., 2] > 0
    lost = present & (a[..., 2] <= 0)
    d = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    centre = np.nanmean(np.where(present[..., None], b[..., :2], np.nan), axis=1)
    d = np.where(lost, np.linalg.norm(b[..., :2] - centre[:, None], axis=-1), d)
    return float(d[present].mean())


def scenarios(source_frames: int, target_frames: int):
    """(name, source keypoints, answer, target training keypoints) for every source and fault."""
    z_t, x_t = depth_path(target_frames, periods=4.0, phase=0.0)
    target = film(unit_poses(0, target_frames), z_t, x_t, TARGET)
    for k, (name, cam) in enumerate(SOURCES.items()):
        unit = unit_poses(k + 1, source_frames)
        z, x = depth_path(source_frames, periods=2.0, phase=0.7 + k)
        source = film(unit, z, x, cam)
        truth = film(unit, z, x * TARGET.body / cam.body, TARGET)
        for fault in ("none", "outliers", "missing ankles", "a jump"):
            yield name, fault, inject(source, fault, seed=k), truth, target
    # A source that walks only the middle third of the depths: the same distance to its camera.
    cam = SOURCES["near/far walk, smaller and higher in frame"]
    unit = unit_poses(3, source_frames)
    z, x = depth_path(source_frames, periods=2.0, phase=0.3, near=4.0, far=5.0)
    yield "middle third of the depths", "none", film(unit, z, x, cam), film(
        unit, z, x * TARGET.body / cam.body, TARGET), target


def run(source_frames: int, target_frames: int) -> list[dict]:
    rows = []
    for name, fault, src, truth, tgt in scenarios(source_frames, target_frames):
        rows.append({"source": name, "fault": fault, "unnormalized": body_error(src, truth),
                     **{m: body_error(normalized(m, src, tgt), truth) for m in ("paper", "robust")}})
    return rows


def main(argv):
    del argv
    rows = run(_SOURCE_FRAMES.value, _TARGET_FRAMES.value)
    print("| source | fault | paper | robust | not normalized |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['fault']} | {r['paper']:.1f} | {r['robust']:.1f} | {r['unnormalized']:.1f} |")
    means = {m: float(np.mean([r[m] for r in rows])) for m in ("paper", "robust", "unnormalized")}
    wide = run_wide_walk(_SOURCE_FRAMES.value, _TARGET_FRAMES.value)
    print("\n| a walk across a wide frame | figures inside the frame | ankles in the target's range | "
          "pose error (px, horizontal offset removed) | ankle travel (px) | target's range (px) |\n|---|---|---|---|---|---|")
    for m, r in wide.items():
        print(f"| {m} | {100 * r['figures_inside_frame']:.0f}% | {100 * r['ankles_in_target_range']:.0f}% | "
              f"{r['pose_error_px']:.1f} | {r['travel_px']:.0f} | {r['target_range_px']:.0f} |")
    print(json.dumps({"px_at": f"{SIZE}x{SIZE}", "mean_body_error_px": means, "rows": rows, "wide_walk": wide}))


if __name__ == "__main__":
    app.run(main)
