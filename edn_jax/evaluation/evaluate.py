"""Evaluation as in the paper: self-reenactment on a target's held-out frames.

One evaluator serves both the end of every training stage (a short version: the first
64 held-out frames, image scores only) and evaluate mode (every held-out frame, pose
distance, jitter and files). Each held-out frame is generated from its own stick figure,
sequentially as at inference (``inference.render_chunk``: every video from a blank first
frame, each frame conditioned on the previous output), and compared with the real frame:

* **image quality**: SSIM and LPIPS on the body crop (the input pose's bounding box)
  and on the face crop (the face GAN's fixed-size crop), whole-frame SSIM, and L1;
* **baselines**: the same scores for the mean training frame, and for a face model the
  same frames without the face residual (the model before its face stage);
* **pose distance**: the detector P runs on the generated frames, and its keypoints
  are compared with the input keypoints (body 25, face 70, hands 2 x 21, overall),
  with the rate of missed detections. The same detector on the real frames gives the
  floor any generator is measured against. Pixels at the evaluated frame size;
* **temporal stability**: frame-to-frame change of the generated frames and of their
  detected keypoints, next to the same for the real held-out frames.

The evaluator itself, and the array math it runs chunk by chunk, is ``held_out``. Evaluate mode writes ``<workdir>/evaluation/<stage>/`` (``metrics.json``,
``per_frame.csv`` (with the baselines' scores of each frame), ``per_frame.png`` (those scores
plotted), ``samples.png``, ``side_by_side.mp4``: stick figure | generated | real) and
TensorBoard (``<workdir>/tensorboard/evaluate_<stage>``).
"""

from __future__ import annotations

import csv
import json
import os
import warnings

import jax
import numpy as np
from clu import metric_writers
from flax import traverse_util

from edn_jax import filenames, stages
from edn_jax.data import build
from edn_jax.errors import EdnError
from edn_jax.evaluation import held_out, metrics
from edn_jax.models import checkpoints
from edn_jax.pose import detector as pose_detector
from edn_jax.runtime import images, plots, storage
from edn_jax.runtime.fileio import atomic_path

PROTOCOLS = ("edn_jax", "paper")


def lpips_or_none(net: str = "alex"):
    """LPIPS for the scores that use it, or None (with a warning) if its weights cannot load:
    the end of a training stage still reports the rest."""
    try:
        return metrics.make_lpips(net)
    except (EdnError, OSError) as e:
        warnings.warn(f"LPIPS scores off: {e}", stacklevel=2)
        return None


def validate_evaluate_config(config) -> None:
    e = config.evaluate
    checks = [
        (e.lpips_net in ("alex", "vgg"), f"evaluate.lpips_net={e.lpips_net!r} is not known", "use alex or vgg"),
        (e.chunk_frames >= 1, f"evaluate.chunk_frames={e.chunk_frames} must be >= 1", "use e.g. 16"),
        (e.max_frames >= 0, f"evaluate.max_frames={e.max_frames} must be >= 0", "use 0 for every held-out frame"),
        (e.detect_min_side >= 0, f"evaluate.detect_min_side={e.detect_min_side} must be >= 0", "use e.g. 256"),
        (e.protocol in PROTOCOLS, f"evaluate.protocol={e.protocol!r} is not known", f"use {' or '.join(PROTOCOLS)}"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)


def holdout_summary(result: dict) -> dict:
    """The short evaluation of a training stage's end as flat scalars: ``ssim_generated``,
    ``body_ssim_mean_train_frame``, ``face_lpips_without_face``, ... (None scores left out)."""
    summary = {"holdout_frames": result["frames"], "holdout_faces": result["faces"],
               "face_crop_px": result["face_crop_px"]}
    for candidate in ("generated", "without_face") + held_out.BASELINES:
        for key, value in result.get(candidate, {}).items():
            if key in held_out.FRAME_SCORES and value is not None:
                summary[f"{key}_{candidate}"] = value
    return summary


def evaluate_model(config, model_workdir: str, out_dir: str, stage_name: str = "", lpips=None,
                   detector_factory=None, writer=None, explicit=()) -> dict:
    """Evaluates a trained stage on its dataset's held-out frames; writes and returns the results.

    The model is rebuilt from ``model_workdir``'s training record (``explicit``: the fields the
    user set, which must agree with it). ``lpips`` (``metrics.make_lpips``) can be passed in to
    be shared between evaluations; ``detector_factory`` makes the pose detectors (None: no pose
    distance), one per stream of frames of this evaluation.
    """
    validate_evaluate_config(config)
    e = config.evaluate
    model = checkpoints.load_trained_model(config, model_workdir, stage_name=stage_name, explicit=explicit)
    stage, renderer = model.stage, model.renderer
    directory = build.model_dataset_dir(config, model_workdir, model.dataset_dir)
    model = checkpoints.with_plate(model, directory)
    lpips = lpips if lpips is not None else metrics.make_lpips(e.lpips_net)
    face_side = renderer.face_crop if renderer.has_face else stages.face_crop_side(model.config, stage.height,
                                                                                   stage.width)
    storage.makedirs(out_dir)
    video_path = os.path.join(out_dir, filenames.EVALUATION_VIDEO)
    result, rows, grid = held_out.evaluate_held_out(
        renderer, model.params, directory, stage.height, stage.width, lpips=lpips, face_side=face_side,
        max_frames=e.max_frames, chunk_frames=e.chunk_frames, detector_factory=detector_factory,
        detect_min_side=e.detect_min_side, side_by_side=video_path, desc=f"evaluating the {stage.name} stage")
    height, width = stage.height, stage.width
    result.update({
        "model_workdir": storage.absolute(model_workdir), "stage": stage.name, "step": stage.num_steps,
        "lpips_net": e.lpips_net, "protocol": e.protocol,
        "units": {
            "pose_distance": f"pixels at {height}x{width} (the evaluated frame size)",
            "pose_paper_distance": f"pixels at {metrics.PAPER_FRAME_HEIGHT} rows (the paper's 512x1024), scaled by "
                                   f"{metrics.PAPER_FRAME_HEIGHT}/{height} from the evaluated frame",
            "keypoint_jitter": f"pixels per frame at {height}x{width}",
            "frame_jitter": "mean absolute change per pixel and channel between consecutive frames, 8-bit levels",
            "missed_rate": "fraction of the input's keypoints the detector did not find",
            "missed_per_frame": "input keypoints the detector did not find, per frame (the paper's count)",
            "l1": "mean absolute difference per pixel and channel, frames in [0, 1]",
        },
        "outputs": {"per_frame_csv": os.path.join(out_dir, filenames.PER_FRAME_CSV),
                    "per_frame_plot": os.path.join(out_dir, filenames.PER_FRAME_PLOT), "side_by_side": video_path,
                    "samples": os.path.join(out_dir, filenames.EVALUATION_SAMPLES)},
    })
    _write_outputs(out_dir, result, rows, grid)
    if writer is not None:
        writer.write_scalars(stage.num_steps, flatten_scores(result))
        writer.write_images(stage.num_steps, {"evaluate/stick_generated_real_nearest": grid[None]})
        writer.flush()
    return result


def flatten_scores(result: dict) -> dict[str, float]:
    """The numeric scores of a result as flat TensorBoard scalar names (``evaluate/generated/body_ssim``)."""
    sections = ("generated", "without_face", *held_out.BASELINES, "real", "input_keypoint_jitter")
    flat = traverse_util.flatten_dict({k: result[k] for k in sections if k in result}, sep="/")
    return {f"evaluate/{k}": float(v) for k, v in flat.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _write_outputs(out_dir: str, result: dict, rows: list[dict], grid: np.ndarray) -> None:
    with atomic_path(os.path.join(out_dir, filenames.PER_FRAME_CSV)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    images.write_png(os.path.join(out_dir, filenames.EVALUATION_SAMPLES), grid)
    plots.per_frame_scores(rows, os.path.join(out_dir, filenames.PER_FRAME_PLOT),
                           f"{result.get('stage', '')} stage, step {result.get('step', '')}: held-out frames")
    with atomic_path(os.path.join(out_dir, filenames.METRICS)) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)


def stage_output_dir(workdir: str, stage_name: str) -> str:
    return os.path.join(workdir, filenames.EVALUATION, stage_name)


def make_detector(config):
    return pose_detector.from_config(config.pose)


def run_evaluate_mode(config, workdir: str, overrides=()) -> dict:
    """``mode=evaluate``: the trained model in ``evaluate.model_workdir`` (default: ``--workdir``)
    scored on its dataset's held-out frames; results under ``<workdir>/evaluation/<stage>/``.
    The model is rebuilt from its directory (``overrides``: the command line's ``--config.*``
    names, checked against it). A stage already evaluated there is reported, not redone, unless
    ``overwrite``."""
    validate_evaluate_config(config)
    model_workdir = config.evaluate.model_workdir or workdir
    explicit = stages.explicit_fields(config, overrides)
    trained, _ = checkpoints.trained_config(config, model_workdir, explicit)
    stage = config.evaluate.stage or stages.plan_stages(trained)[-1].name
    out_dir = stage_output_dir(workdir, stage)
    existing = os.path.join(out_dir, filenames.METRICS)
    if storage.exists(existing) and not config.overwrite:
        with storage.open(existing) as f:
            result = json.load(f)
        print(f"already evaluated: {existing} (set --config.overwrite=True to evaluate again)")
    else:
        writer = metric_writers.create_default_writer(
            os.path.join(workdir, filenames.TENSORBOARD, f"evaluate_{stage}"), just_logging=jax.process_index() > 0)
        factory = (lambda: make_detector(config)) if config.evaluate.pose_distance else None
        try:
            result = evaluate_model(config, model_workdir, out_dir, stage, detector_factory=factory, writer=writer,
                                    explicit=explicit)
        finally:
            writer.close()
    print(format_summary(result, config.evaluate.protocol))
    return result


def fmt(value, digits: int = 3) -> str:
    """A score for a table: ``digits`` decimals, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def missed_text(rate) -> str:
    """A missed rate for a table or a report line: "8% missed", or "n/a missed"."""
    return "n/a missed" if rate is None else f"{100 * rate:.0f}% missed"


ROW_NAMES = {"generated": "generated", "without_face": "without the face residual",
             "mean_train_frame": "mean training frame", "nearest_train_frame": "nearest training frame by pose",
             "real": "real frames (detector floor)"}


def body_ssim_key(protocol: str) -> str:
    """The body SSIM a protocol reports: windowed (edn_jax) or crop, then SSIM (the paper)."""
    return "body_ssim_crop" if protocol == "paper" else "body_ssim"


def pose_cells(scores: dict, protocol: str) -> str:
    """Body, face, hands and overall pose distance with their missed detections, as a protocol reports them."""
    cells = []
    for part in metrics.PAPER_PARTS if protocol == "paper" else metrics.POSE_PARTS:
        if protocol == "paper":
            missed = f"{fmt(scores[f'{part}_missed_per_frame'], 2)} missed/frame"
        else:
            missed = missed_text(scores[f"{part}_missed_rate"])
        cells.append(f"{part} {fmt(scores[f'{part}_distance'], 2)} ({missed})")
    return ", ".join(cells)


def pose_units(result: dict, protocol: str) -> str:
    """Where a protocol's pose distances are measured."""
    h, w = result["frame_size_hw"]
    return f"px at {metrics.PAPER_FRAME_HEIGHT} rows, complete groups" if protocol == "paper" else f"px at {h}x{w}"


def format_summary(result: dict, protocol: str = "edn_jax") -> str:
    """Evaluate mode's tables: the model next to its baselines, image scores then pose distance."""
    h, w = result["frame_size_hw"]
    body = body_ssim_key(protocol)
    lines = [f"evaluation of the {result['stage']} stage ({result['frames']} held-out frames, "
             f"{result['faces']} with a face, at {h}x{w}; protocol {protocol}):",
             f"  {'':32s} {'body SSIM':>9s} {'body LPIPS':>10s} {'face SSIM':>9s} {'face LPIPS':>10s} {'SSIM':>6s}"]
    for name in ("generated", "without_face") + held_out.BASELINES:
        if name in result:
            r = result[name]
            lines.append(f"  {ROW_NAMES[name]:32s} {fmt(r[body]):>9s} {fmt(r.get('body_lpips')):>10s} "
                         f"{fmt(r['face_ssim']):>9s} {fmt(r.get('face_lpips')):>10s} {fmt(r['ssim']):>6s}")
    lines.append(f"  frame jitter (8-bit levels/frame): generated {fmt(result['generated']['frame_jitter'], 2)}, "
                 f"real {fmt(result['real']['frame_jitter'], 2)}")
    key = "pose_paper" if protocol == "paper" else "pose"
    if key in result["generated"]:
        for name in ("generated", "nearest_train_frame", "real"):
            lines.append(f"  pose distance, {ROW_NAMES[name]} ({pose_units(result, protocol)}): "
                         + pose_cells(result[name][key], protocol))
        lines.append(f"  keypoint jitter, overall (px/frame): generated "
                     f"{fmt(result['generated']['keypoint_jitter']['overall'], 2)}, real "
                     f"{fmt(result['real']['keypoint_jitter']['overall'], 2)}, input "
                     f"{fmt(result['input_keypoint_jitter']['overall'], 2)}")
    lines.append(f"  written to {os.path.dirname(result['outputs']['per_frame_csv'])}")
    return "\n".join(lines)
