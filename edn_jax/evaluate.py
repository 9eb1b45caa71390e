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

The array math (SSIM, LPIPS, crops, jitter, pose distance) is jit-compiled and runs
chunk by chunk next to the render, so memory does not grow with the held-out set.
Evaluate mode writes ``<workdir>/evaluation/<stage>/`` (``metrics.json``,
``per_frame.csv`` (with the baselines' scores of each frame), ``per_frame.png`` (those scores
plotted), ``samples.png``, ``side_by_side.mp4``: stick figure | generated | real) and
TensorBoard (``<workdir>/tensorboard/evaluate_<stage>``).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers
from flax import traverse_util

from edn_jax import (build, checkpoints, dataset, exemplar, face_crop, filenames, holdout, images, inference, metrics,
                     plots, progress, stages, storage, video)
from edn_jax.errors import EdnError
from edn_jax.fileio import atomic_path
from edn_jax.pose import detector as pose_detector

LPIPS_MIN_SIDE = 64  # crops smaller than this are upsampled before LPIPS (AlexNet needs >= 31 px)
FRAME_SCORES = ("ssim", "body_ssim", "body_lpips", "face_ssim", "face_lpips", "l1", "face_l1", "body_ssim_crop")
BASELINES = ("mean_train_frame", "nearest_train_frame")
BASELINE_COLUMNS = ("ssim", "body_ssim", "body_lpips", "face_lpips")  # per_frame.csv's baseline scores
POSE_STREAMS = ("generated", "real", "nearest_train_frame")  # each with its own detector
PROTOCOLS = ("edn_jax", "paper")
GRID_ROWS = 4


def body_crop_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) body crops are resampled to for LPIPS: as tall as the frame (>= 64 px), half as wide."""
    side = max(LPIPS_MIN_SIDE, height)
    return side, side // 2


def _lpips_ready(crops: jax.Array) -> jax.Array:
    """Crops below 64 px a side upsampled (bilinear) to 64: LPIPS-alex needs >= 31 px, and one
    size keeps scores of small crops comparable. Larger crops pass as they are."""
    h, w = crops.shape[1:3]
    if min(h, w) >= LPIPS_MIN_SIDE:
        return crops
    scale = LPIPS_MIN_SIDE / min(h, w)
    size = (crops.shape[0], int(round(h * scale)), int(round(w * scale)), crops.shape[3])
    return jax.image.resize(crops, size, "bilinear")


@functools.partial(jax.jit, static_argnames=("face_side", "body_size"))
def frame_scores(lpips, generated, real, body_boxes, face_boxes, face_valid, *, face_side: int,
                 body_size: tuple[int, int]) -> dict[str, jax.Array]:
    """Per-frame image scores of generated vs real frames ([T, H, W, 3] in [-1, 1]): [T] each.

    ``ssim`` whole frame; ``body_ssim`` over windows centred in the body box, ``body_ssim_crop``
    of the body box cut out (crop, then SSIM: the paper's), ``body_lpips`` on the body box
    resampled to ``body_size``; ``face_ssim`` / ``face_lpips`` on the ``face_side`` crop (NaN
    where the frame has no face); ``l1`` / ``face_l1`` the mean absolute difference in [0, 1]
    units over the frame / the face crop. Without ``lpips`` (None) no LPIPS scores.
    """
    h, w = real.shape[1:3]
    g01, r01 = (generated + 1) / 2, (real + 1) / 2
    scores = {"ssim": metrics.ssim(g01, r01), "body_ssim": metrics.masked_ssim(g01, r01, body_boxes),
              "body_ssim_crop": metrics.cropped_ssim(g01, r01, body_boxes),
              "l1": jnp.mean(jnp.abs(generated - real), axis=(1, 2, 3)) / 2}
    corners = face_crop.crop_boxes(face_boxes, face_valid, h, w, face_side)
    yx = corners.astype(jnp.float32)
    square = jnp.stack([yx[:, 1], yx[:, 0], yx[:, 1] + face_side - 1, yx[:, 0] + face_side - 1], axis=-1)
    face = lambda x: face_crop.crop(x, corners, face_side)  # noqa: E731
    has_face = jnp.asarray(face_valid, bool)
    scores["face_ssim"] = jnp.where(has_face, metrics.masked_ssim(g01, r01, square), jnp.nan)
    scores["face_l1"] = jnp.where(has_face, jnp.mean(jnp.abs(face(generated) - face(real)), axis=(1, 2, 3)) / 2,
                                  jnp.nan)
    if lpips is not None:
        body = lambda x: metrics.box_crops(x, body_boxes, body_size)  # noqa: E731
        scores["body_lpips"] = lpips(_lpips_ready(body(generated)), _lpips_ready(body(real)))
        scores["face_lpips"] = jnp.where(has_face, lpips(_lpips_ready(face(generated)), _lpips_ready(face(real))),
                                         jnp.nan)
    return scores


@jax.jit
def _frame_change(previous, frames) -> jax.Array:
    """Mean |change| per pixel from each frame to the one before it (``previous`` before the first),
    in 8-bit levels: [T]."""
    return metrics.frame_jitter(jnp.concatenate([previous, frames]) * 127.5)


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


def evaluate_held_out(renderer, params, dataset_dir: str, height: int, width: int, *, lpips, face_side: int,
                      max_frames: int = 0, chunk_frames: int = 16, detector_factory=None, detect_min_side: int = 256,
                      side_by_side: str | None = None, desc: str = "evaluating") -> tuple[dict, list[dict], np.ndarray]:
    """(result, per-frame rows, sample grid): a model (``renderer``, ``params``) scored on its
    dataset's held-out frames at ``height`` x ``width``, next to the baselines (``BASELINES``, and
    for a face model the frames without the face residual).

    ``lpips`` (``metrics.make_lpips``, or None for no LPIPS scores) is passed in so evaluations
    can share it. ``detector_factory`` (no arguments -> a pose detector, or None to skip pose
    distance) makes one detector per stream of frames (``POSE_STREAMS``): a detector carries
    regions from one call to the next, so streams sharing one would contaminate each other.
    ``side_by_side`` is a video path for (stick figure | generated | real).
    """
    split, train_split = dataset.open_split(dataset_dir, "validation"), dataset.open_split(dataset_dir, "train")
    order = holdout.held_out_order(split, max_frames)
    if len(order) == 0:
        raise EdnError(f"the dataset at {dataset_dir} has no held-out frames",
                       "rebuild it with build.val_fraction > 0 (e.g. 0.2)")
    mean = jnp.asarray(holdout.mean_train_frame(train_split, height, width))
    train_poses = jnp.asarray(dataset.split_keypoints(train_split, height, width))
    body_size = body_crop_size(height, width)
    videos = split.video_ids[order]
    chunk_frames = min(chunk_frames, int(np.unique(videos, return_counts=True)[1].max()))  # no chunk of padding only
    fps = float(split.metadata["videos"][int(videos[0])].get("fps") or 30.0)
    score = functools.partial(frame_scores, lpips, face_side=face_side, body_size=body_size)

    rows, scores_by_chunk, grid = [], [], []
    detected = {stream: [] for stream in POSE_STREAMS} if detector_factory is not None else {}
    input_kps = []
    candidates = ("generated", "without_face") if renderer.has_face else ("generated",)
    with progress.Progress(len(order), f"{desc} on {len(order)} held-out frames", unit="frames") as bar, \
            contextlib.ExitStack() as outputs:
        writer = outputs.enter_context(video.VideoWriter(side_by_side, fps)) if side_by_side else None
        detectors = {stream: detector_factory() for stream in detected}
        for detector in detectors.values():
            if hasattr(detector, "close"):
                outputs.callback(detector.close)
        for vid in np.unique(videos):
            records = order[videos == vid]
            carries = dict.fromkeys(candidates, inference.initial_carry(height, width))
            previous = None  # the last generated and real frames of the chunk before
            for start in range(0, len(records), chunk_frames):
                chunk = records[start:start + chunk_frames]
                # A short last chunk is padded with its last record, so every call has one shape (one
                # compile); the padding comes after the video's last frame and is dropped.
                n = len(chunk)
                padded = holdout.records_at(split, np.concatenate([chunk, np.repeat(chunk[-1:], chunk_frames - n)]),
                                            height, width)
                nearest = np.asarray(holdout.nearest_poses(jnp.asarray(padded["keypoints"]), train_poses))
                retrieved = holdout.records_at(train_split, nearest, height, width)
                baselines = {"mean_train_frame": jnp.broadcast_to(mean, padded["frame"].shape),
                             "nearest_train_frame": jnp.asarray(retrieved["frame"])}
                # A model with model.exemplar renders each frame from the retrieval baseline's frame.
                exemplars = (jnp.asarray(exemplar.for_poses(
                    retrieved, padded["keypoints"], renderer.exemplar_warp,
                    params.get("background") if renderer.uses_plate else None)) if renderer.uses_exemplar else None)
                frames, scores, carries = _render_and_score(renderer, params, padded, carries, baselines, score,
                                                            exemplars)
                held = {k: v[:n] for k, v in padded.items()}
                frames, scores = jax.tree.map(lambda v: v[:n], (frames, scores))
                fake, real = frames["generated"], jnp.asarray(held["frame"])
                change_fake = _frame_change(fake[:1] if previous is None else previous[0], fake)
                change_real = _frame_change(real[:1] if previous is None else previous[1], real)
                first, previous = previous is None, (fake[-1:], real[-1:])
                scores_by_chunk.append(scores)
                u8 = {name: np.asarray(images.to_uint8(x)) for name, x in
                      (("generated", fake), ("real", real), ("label", held["label"]),
                       ("nearest_train_frame", frames["nearest_train_frame"]))}
                for i, record in enumerate(chunk):
                    for stream, detector in detectors.items():
                        detected[stream].append(pose_detector.detect_upscaled(detector, u8[stream][i], detect_min_side))
                    input_kps.append(held["keypoints"][i])
                    row = {"video": int(vid), "frame": int(split.frame_indices[record]),
                           "nearest_train_record": int(nearest[i])}
                    row.update({k: float(scores["generated"][k][i]) for k in FRAME_SCORES if k in scores["generated"]})
                    row.update({f"{k}_{b}": float(scores[b][k][i]) for b in BASELINES for k in BASELINE_COLUMNS
                                if k in scores[b]})
                    row["frame_change_generated"] = np.nan if first and i == 0 else float(change_fake[i])
                    row["frame_change_real"] = np.nan if first and i == 0 else float(change_real[i])
                    rows.append(row)
                    panel = np.concatenate([u8["label"][i], u8["generated"][i], u8["real"][i]], axis=1)
                    if writer is not None:
                        writer.write(panel)
                    if len(grid) < GRID_ROWS:
                        grid.append(np.concatenate([panel, u8["nearest_train_frame"][i]], axis=1))
                bar.update(n)

    result = _summarise(rows, np.stack(input_kps), {k: np.stack(v) for k, v in detected.items()}, videos, height)
    for name in scores_by_chunk[0]:
        if name != "generated":
            result.setdefault(name, {}).update(
                {k: _nanmean(np.concatenate([c[name][k] for c in scores_by_chunk])) for k in scores_by_chunk[0][name]})
    result.update({"dataset": storage.absolute(dataset_dir), "frame_size_hw": [height, width],
                   "face_crop_px": face_side, "body_crop_hw": list(body_size)})
    return result, rows, np.concatenate(grid, axis=0)


def _render_and_score(renderer, params, held: dict, carries: dict, baselines: dict, score, exemplars=None):
    """({candidate: frames}, {candidate: {score: [T] numpy}}, carries) of one chunk of held-out
    records: each rendered candidate (with and without the face residual) from its own carry
    (and the frames' ``exemplars`` for ``model.exemplar``), and the baselines' frames."""
    labels, boxes, valid = (jnp.asarray(held[k]) for k in ("label", "face_box", "face_valid"))
    real, body = jnp.asarray(held["frame"]), jnp.asarray(held["body_box"])
    frames, carries = dict(baselines), dict(carries)
    for name in carries:
        frames[name], carries[name] = inference.render_chunk(renderer, params, labels, boxes, valid, carries[name],
                                                             apply_face=name == "generated", exemplars=exemplars)
    scores = {name: {k: np.asarray(v) for k, v in score(x, real, body, boxes, valid).items()}
              for name, x in frames.items()}
    return frames, scores, carries


def holdout_summary(result: dict) -> dict:
    """The short evaluation of a training stage's end as flat scalars: ``ssim_generated``,
    ``body_ssim_mean_train_frame``, ``face_lpips_without_face``, ... (None scores left out)."""
    summary = {"holdout_frames": result["frames"], "holdout_faces": result["faces"],
               "face_crop_px": result["face_crop_px"]}
    for candidate in ("generated", "without_face") + BASELINES:
        for key, value in result.get(candidate, {}).items():
            if key in FRAME_SCORES and value is not None:
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
    result, rows, grid = evaluate_held_out(
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


def _nanmean(values) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def pose_scores(detected: np.ndarray, target: np.ndarray, height: int) -> dict:
    """{"pose": edn_jax's pose distance (px at the ``height``-row frame), "pose_paper": the paper's (px
    at 512 rows)} of detections [T, 137, 3] against the poses they should show, NaN as None."""
    detected, target = jnp.asarray(detected), jnp.asarray(target)
    scores = {"pose": metrics.pose_distance(detected, target),
              "pose_paper": metrics.paper_pose_distance(detected, target, metrics.PAPER_FRAME_HEIGHT / height)}
    return {k: {name: (None if np.isnan(float(v)) else float(v)) for name, v in part.items()}
            for k, part in scores.items()}


def _keypoint_jitter(keypoints: np.ndarray, videos: np.ndarray) -> dict:
    """Keypoint jitter per part, pooled over videos (each video's steps weighted by their count)."""
    out = {}
    for part, points in metrics.POSE_PARTS.items():
        values, weights = [], []
        for vid in np.unique(videos):
            kps = keypoints[videos == vid][:, points]
            if len(kps) > 1:
                value = float(metrics.keypoint_jitter(jnp.asarray(kps)))
                if np.isfinite(value):
                    values.append(value)
                    weights.append(len(kps) - 1)
        out[part] = float(np.average(values, weights=weights)) if values else None
    return out


def _summarise(rows: list[dict], input_kps, detected: dict, videos, height: int) -> dict:
    """Means over the held-out frames of the generated frames' scores, and each stream's pose scores
    (``pose_scores``) at the evaluated ``height``."""
    generated = {k: _nanmean([r[k] for r in rows]) for k in FRAME_SCORES if k in rows[0]}
    generated["frame_jitter"] = _nanmean([r["frame_change_generated"] for r in rows])
    result = {"frames": len(rows), "videos": int(len(np.unique(videos))),
              "faces": int(sum(np.isfinite(r["face_ssim"]) for r in rows)),
              "generated": generated, "real": {"frame_jitter": _nanmean([r["frame_change_real"] for r in rows])},
              "input_keypoint_jitter": _keypoint_jitter(input_kps, videos)}
    for stream, kps in detected.items():
        section = result.setdefault(stream, {})
        section.update(pose_scores(kps, input_kps, height), keypoint_jitter=_keypoint_jitter(kps, videos))
    if "generated" in detected:
        per_frame = np.asarray(_per_frame_distance(jnp.asarray(detected["generated"]), jnp.asarray(input_kps)))
        for row, distance in zip(rows, per_frame):  # overall distance of the detections on each generated frame
            row["pose_distance_generated"] = float(distance)
    return result


@jax.jit
def _per_frame_distance(pred, target) -> jax.Array:
    """Mean L2 distance per frame over the points valid in both (NaN when none): [T]."""
    return jax.vmap(lambda p, t: metrics.pose_distance(p, t)["overall_distance"])(pred, target)


def flatten_scores(result: dict) -> dict[str, float]:
    """The numeric scores of a result as flat TensorBoard scalar names (``evaluate/generated/body_ssim``)."""
    sections = ("generated", "without_face", *BASELINES, "real", "input_keypoint_jitter")
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
    for name in ("generated", "without_face") + BASELINES:
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
