"""Evaluation as in the paper: self-reenactment on a target's held-out frames.

Each held-out frame is generated from its own stick figure, sequentially as at
inference (``inference.render_chunk``: every video from a blank first frame, each
frame conditioned on the previous output), and compared with the real frame:

* **image quality**: SSIM and LPIPS on the body crop (the input pose's bounding box)
  and on the face crop (the face GAN's fixed-size crop), plus whole-frame SSIM;
* **pose distance**: the detector P runs on the generated frames, and its keypoints
  are compared with the input keypoints (body 25, face 70, hands 2 x 21, overall),
  with the rate of missed detections. The same detector on the real frames gives the
  floor any generator is measured against. Pixels at the evaluated frame size;
* **temporal stability**: frame-to-frame change of the generated frames and of their
  detected keypoints, next to the same for the real held-out frames.

The array math (SSIM, LPIPS, crops, jitter, pose distance) is jit-compiled and runs
chunk by chunk next to the render, so memory does not grow with the held-out set.
Results go to ``<workdir>/evaluation/<stage>/`` (``metrics.json``, ``per_frame.csv``,
``samples.png``, ``side_by_side.mp4``: stick figure | generated | real) and to
TensorBoard (``<workdir>/tensorboard/evaluate_<stage>``).
"""

from __future__ import annotations

import csv
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from edn_jax import face_crop, metrics
from edn_jax.errors import EdnError
from edn_jax.fileio import atomic_path

EVALUATION_DIR = "evaluation"
LPIPS_MIN_SIDE = 64  # crops smaller than this are upsampled before LPIPS (AlexNet needs >= 31 px)
FRAME_SCORES = ("ssim", "body_ssim", "body_lpips", "face_ssim", "face_lpips")


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

    ``ssim`` whole frame; ``body_ssim`` over windows centred in the body box, ``body_lpips`` on
    the body box resampled to ``body_size``; ``face_ssim`` / ``face_lpips`` on the ``face_side``
    crop (NaN where the frame has no face).
    """
    h, w = real.shape[1:3]
    g01, r01 = (generated + 1) / 2, (real + 1) / 2
    scores = {"ssim": metrics.ssim(g01, r01), "body_ssim": metrics.masked_ssim(g01, r01, body_boxes)}
    body = lambda x: metrics.box_crops(x, body_boxes, body_size)  # noqa: E731
    scores["body_lpips"] = lpips(_lpips_ready(body(generated)), _lpips_ready(body(real)))
    corners = face_crop.crop_boxes(face_boxes, face_valid, h, w, face_side)
    yx = corners.astype(jnp.float32)
    square = jnp.stack([yx[:, 1], yx[:, 0], yx[:, 1] + face_side - 1, yx[:, 0] + face_side - 1], axis=-1)
    face = lambda x: face_crop.crop(x, corners, face_side)  # noqa: E731
    has_face = jnp.asarray(face_valid, bool)
    scores["face_ssim"] = jnp.where(has_face, metrics.masked_ssim(g01, r01, square), jnp.nan)
    scores["face_lpips"] = jnp.where(has_face, lpips(_lpips_ready(face(generated)), _lpips_ready(face(real))), jnp.nan)
    return scores


@jax.jit
def _frame_change(previous, frames) -> jax.Array:
    """Mean |change| per pixel from each frame to the one before it (``previous`` before the first),
    in 8-bit levels: [T]."""
    return metrics.frame_jitter(jnp.concatenate([previous, frames]) * 127.5)


def _upscaled_detect(detector, frame: np.ndarray, min_side: int) -> np.ndarray | None:
    """Keypoints of ``frame`` (in its pixels), detected on a copy upscaled so its shorter side is
    at least ``min_side``: MediaPipe misses people in frames of a few dozen pixels."""
    import cv2

    from edn_jax.pose import layout

    scale = max(1.0, min_side / min(frame.shape[:2]))
    big = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    kps = detector.detect(big)
    if kps is None:
        return layout.empty_pose()
    kps = kps.copy()
    kps[:, :2] /= scale
    return kps


def _dataset_dir(config, model_workdir: str) -> str:
    """The dataset the model was trained on: ``data.dataset_dir``, else the one its training run
    recorded in ``train_summary.json``, else the one training builds into ``model_workdir``."""
    from edn_jax import train

    candidates = [config.data.dataset_dir]
    summary = os.path.join(model_workdir, "train_summary.json")
    if not config.data.dataset_dir and os.path.exists(summary):
        with open(summary) as f:
            candidates.append(json.load(f).get("dataset", ""))
    if not config.data.dataset_dir:
        candidates.append(str(train.training_builder(config, model_workdir).data_dir))
    for directory in candidates:
        if directory and os.path.exists(os.path.join(directory, "dataset_info.json")):
            return directory
    raise EdnError(f"no built dataset found for the model in {os.path.abspath(model_workdir)} "
                   f"(looked in: {', '.join(c for c in candidates if c) or 'nowhere'})",
                   "set --config.data.dataset_dir to the dataset the model was trained on")


def validate_evaluate_config(config) -> None:
    e = config.evaluate
    checks = [
        (e.lpips_net in ("alex", "vgg"), f"evaluate.lpips_net={e.lpips_net!r} is not known", "use alex or vgg"),
        (e.chunk_frames >= 1, f"evaluate.chunk_frames={e.chunk_frames} must be >= 1", "use e.g. 16"),
        (e.max_frames >= 0, f"evaluate.max_frames={e.max_frames} must be >= 0", "use 0 for every held-out frame"),
        (e.detect_min_side >= 0, f"evaluate.detect_min_side={e.detect_min_side} must be >= 0", "use e.g. 256"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)


def _held_out_order(split, max_frames: int) -> np.ndarray:
    """Held-out record indices grouped by video, in frame order; the first ``max_frames`` (0 = all)."""
    order = np.lexsort((split.frame_indices, split.video_ids))
    return order[:max_frames] if max_frames else order


def evaluate_model(config, model_workdir: str, out_dir: str, stage_name: str = "", lpips=None,
                   detector=None, writer=None) -> dict:
    """Evaluates a trained stage on its dataset's held-out frames; writes and returns the results.

    ``lpips`` (``metrics.make_lpips``) and ``detector`` (a pose detector, or None to skip pose
    distance) can be passed in to be shared between evaluations.
    """
    from edn_jax import dataset, inference, progress, train, video

    validate_evaluate_config(config)
    e = config.evaluate
    model = train.load_trained_model(config, model_workdir, stage_name=stage_name)
    stage, renderer, params = model.stage, model.renderer, model.params
    height, width = stage.height, stage.width
    directory = _dataset_dir(config, model_workdir)
    split = dataset.open_split(directory, "validation")
    order = _held_out_order(split, e.max_frames)
    if len(order) == 0:
        raise EdnError(f"the dataset at {directory} has no held-out frames",
                       "rebuild it with build.val_fraction > 0 (e.g. 0.2)")
    lpips = lpips if lpips is not None else metrics.make_lpips(e.lpips_net)
    face_side = renderer.face_crop if renderer.has_face else train.face_crop_side(config, height, width)
    body_size = body_crop_size(height, width)
    videos = split.video_ids[order]
    fps = float(split.metadata["videos"][int(videos[0])].get("fps") or 30.0)

    rows, generated_kps, real_kps, input_kps, grid_rows = [], [], [], [], []
    os.makedirs(out_dir, exist_ok=True)
    video_path = os.path.join(out_dir, "side_by_side.mp4")
    with video.VideoWriter(video_path, fps) as side_by_side, \
            progress.Progress(len(order), f"evaluating the {stage.name} stage on {len(order)} held-out frames",
                              unit="frames") as bar:
        for vid in np.unique(videos):
            records = order[videos == vid]
            carry = inference.initial_carry(height, width)
            previous_fake = previous_real = None
            for start in range(0, len(records), e.chunk_frames):
                chunk = records[start:start + e.chunk_frames]
                held = train.records_at(split, chunk, height, width)
                fake, carry = inference.render_chunk(renderer, params, jnp.asarray(held["label"]),
                                                     jnp.asarray(held["face_box"]), jnp.asarray(held["face_valid"]),
                                                     carry)
                real = jnp.asarray(held["frame"])
                scores = frame_scores(lpips, fake, real, jnp.asarray(held["body_box"]), jnp.asarray(held["face_box"]),
                                      jnp.asarray(held["face_valid"]), face_side=face_side, body_size=body_size)
                first = previous_fake is None
                change_fake = _frame_change(fake[:1] if first else previous_fake, fake)
                change_real = _frame_change(real[:1] if first else previous_real, real)
                previous_fake, previous_real = fake[-1:], real[-1:]
                scores = {k: np.asarray(v) for k, v in scores.items()}
                fake_u8 = np.asarray(inference.to_uint8(fake))
                real_u8 = np.asarray(inference.to_uint8(real))
                label_u8 = np.asarray(inference.to_uint8(held["label"]))
                for i, record in enumerate(chunk):
                    if detector is not None:
                        generated_kps.append(_upscaled_detect(detector, fake_u8[i], e.detect_min_side))
                        real_kps.append(_upscaled_detect(detector, real_u8[i], e.detect_min_side))
                    input_kps.append(held["keypoints"][i])
                    row = {"video": int(vid), "frame": int(split.frame_indices[record])}
                    row.update({k: float(scores[k][i]) for k in FRAME_SCORES})
                    row["frame_change_generated"] = np.nan if first and i == 0 else float(change_fake[i])
                    row["frame_change_real"] = np.nan if first and i == 0 else float(change_real[i])
                    rows.append(row)
                    side_by_side.write(np.concatenate([label_u8[i], fake_u8[i], real_u8[i]], axis=1))
                    if len(grid_rows) < 4:
                        grid_rows.append(np.concatenate([label_u8[i], fake_u8[i], real_u8[i]], axis=1))
                bar.update(len(chunk))

    result = _summarise(rows, np.stack(input_kps), np.stack(generated_kps) if detector is not None else None,
                        np.stack(real_kps) if detector is not None else None, videos)
    result.update({
        "model_workdir": os.path.abspath(model_workdir), "stage": stage.name, "step": stage.num_steps,
        "dataset": os.path.abspath(directory), "frame_size_hw": [height, width], "face_crop_px": face_side,
        "body_crop_hw": list(body_size), "lpips_net": e.lpips_net,
        "units": {
            "pose_distance": f"pixels at {height}x{width} (the evaluated frame size)",
            "keypoint_jitter": f"pixels per frame at {height}x{width}",
            "frame_jitter": "mean absolute change per pixel and channel between consecutive frames, 8-bit levels",
            "missed_rate": "fraction of the input's keypoints the detector did not find",
        },
        "outputs": {"per_frame_csv": os.path.join(out_dir, "per_frame.csv"), "side_by_side": video_path,
                    "samples": os.path.join(out_dir, "samples.png")},
    })
    _write_outputs(out_dir, result, rows, np.concatenate(grid_rows, axis=0))
    if writer is not None:
        writer.write_scalars(stage.num_steps, flatten_scores(result))
        writer.write_images(stage.num_steps, {"evaluate/stick_generated_real": np.concatenate(grid_rows, 0)[None]})
        writer.flush()
    return result


def _nanmean(values) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _pose_scores(pred: np.ndarray, target: np.ndarray) -> dict:
    scores = {k: float(v) for k, v in metrics.pose_distance(jnp.asarray(pred), jnp.asarray(target)).items()}
    return {k: (None if np.isnan(v) else v) for k, v in scores.items()}


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


def _summarise(rows: list[dict], input_kps, generated_kps, real_kps, videos) -> dict:
    generated = {k: _nanmean([r[k] for r in rows]) for k in FRAME_SCORES}
    generated["frame_jitter"] = _nanmean([r["frame_change_generated"] for r in rows])
    real = {"frame_jitter": _nanmean([r["frame_change_real"] for r in rows])}
    result = {"frames": len(rows), "videos": int(len(np.unique(videos))),
              "faces": int(sum(np.isfinite(r["face_ssim"]) for r in rows)),
              "generated": generated, "real": real,
              "input_keypoint_jitter": _keypoint_jitter(input_kps, videos)}
    if generated_kps is not None:
        generated["pose"] = _pose_scores(generated_kps, input_kps)
        real["pose"] = _pose_scores(real_kps, input_kps)
        generated["keypoint_jitter"] = _keypoint_jitter(generated_kps, videos)
        real["keypoint_jitter"] = _keypoint_jitter(real_kps, videos)
        per_frame = np.asarray(_per_frame_distance(jnp.asarray(generated_kps), jnp.asarray(input_kps)))
        for row, distance in zip(rows, per_frame):  # overall distance of the detections on each generated frame
            row["pose_distance_generated"] = float(distance)
    return result


@jax.jit
def _per_frame_distance(pred, target) -> jax.Array:
    """Mean L2 distance per frame over the points valid in both (NaN when none): [T]."""
    return jax.vmap(lambda p, t: metrics.pose_distance(p, t)["overall_distance"])(pred, target)


def flatten_scores(result: dict) -> dict[str, float]:
    """The numeric scores of a result as flat TensorBoard scalar names (``evaluate/generated/body_ssim``)."""
    out = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(f"{prefix}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            out[prefix] = float(value)

    for key in ("generated", "real", "input_keypoint_jitter"):
        visit(f"evaluate/{key}", result[key])
    return out


def _write_outputs(out_dir: str, result: dict, rows: list[dict], grid: np.ndarray) -> None:
    import cv2

    with atomic_path(os.path.join(out_dir, "per_frame.csv")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    with atomic_path(os.path.join(out_dir, "samples.png"), suffix=".png") as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise EdnError(f"could not write {out_dir}/samples.png", "check the disk has space and is writable")
    with atomic_path(os.path.join(out_dir, "metrics.json")) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)


def stage_output_dir(workdir: str, stage_name: str) -> str:
    return os.path.join(workdir, EVALUATION_DIR, stage_name)


def make_detector(config):
    from edn_jax.pose import detector

    return detector.MediaPipeHolisticDetector(min_detection_confidence=config.pose.min_detection_confidence,
                                              min_visibility=config.pose.min_visibility)


def run_evaluate_mode(config, workdir: str) -> dict:
    """``mode=evaluate``: the trained model in ``evaluate.model_workdir`` (default: ``--workdir``)
    scored on its dataset's held-out frames; results under ``<workdir>/evaluation/<stage>/``.
    A stage already evaluated there is reported, not redone, unless ``overwrite``."""
    from clu import metric_writers

    from edn_jax import train

    validate_evaluate_config(config)
    model_workdir = config.evaluate.model_workdir or workdir
    stage = config.evaluate.stage or train.plan_stages(config)[-1].name
    out_dir = stage_output_dir(workdir, stage)
    existing = os.path.join(out_dir, "metrics.json")
    if os.path.exists(existing) and not config.overwrite:
        with open(existing) as f:
            result = json.load(f)
        print(f"already evaluated: {existing} (set --config.overwrite=True to evaluate again)")
    else:
        writer = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard", f"evaluate_{stage}"),
                                                      just_logging=jax.process_index() > 0)
        detector = make_detector(config) if config.evaluate.pose_distance else None
        try:
            result = evaluate_model(config, model_workdir, out_dir, stage, detector=detector, writer=writer)
        finally:
            if detector is not None:
                detector.close()
            writer.close()
    print(format_summary(result))
    return result


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_summary(result: dict) -> str:
    g, r = result["generated"], result["real"]
    h, w = result["frame_size_hw"]
    lines = [f"evaluation of the {result['stage']} stage ({result['frames']} held-out frames, "
             f"{result['faces']} with a face, at {h}x{w}):",
             f"  body crop: SSIM {_fmt(g['body_ssim'])}, LPIPS {_fmt(g['body_lpips'])}; "
             f"face crop: SSIM {_fmt(g['face_ssim'])}, LPIPS {_fmt(g['face_lpips'])}; whole frame SSIM {_fmt(g['ssim'])}",
             f"  frame jitter (8-bit levels/frame): generated {_fmt(g['frame_jitter'], 2)}, "
             f"real {_fmt(r['frame_jitter'], 2)}"]
    if "pose" in g:
        for name, scores in (("generated", g["pose"]), ("real (detector floor)", r["pose"])):
            lines.append(f"  pose distance, {name} (px at {h}x{w}): body {_fmt(scores['body_distance'], 2)}, "
                         f"face {_fmt(scores['face_distance'], 2)}, hands {_fmt(scores['hands_distance'], 2)}, "
                         f"overall {_fmt(scores['overall_distance'], 2)}; missed "
                         f"{_fmt(scores['overall_missed_rate'], 3)}")
        lines.append(f"  keypoint jitter, overall (px/frame): generated {_fmt(g['keypoint_jitter']['overall'], 2)}, "
                     f"real {_fmt(r['keypoint_jitter']['overall'], 2)}, "
                     f"input {_fmt(result['input_keypoint_jitter']['overall'], 2)}")
    lines.append(f"  written to {os.path.dirname(result['outputs']['per_frame_csv'])}")
    return "\n".join(lines)
