"""The held-out evaluator: a model renders its dataset's held-out frames, sequentially as at
inference, and each frame is scored against the real one next to the baselines (the mean training
frame, the nearest training frame by pose, and for a face model the frames without the face
residual). Used by the end of every training stage and by evaluate mode (``evaluate``), which
describes the scores.

The array math (SSIM, LPIPS, crops, jitter, pose distance) is jit-compiled and runs chunk by
chunk next to the render, so memory does not grow with the held-out set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edn_jax.conditioning import exemplar, face_crop
from edn_jax.data import dataset
from edn_jax.errors import EdnError
from edn_jax.evaluation import holdout, metrics
from edn_jax.models import inference
from edn_jax.pose import detector as pose_detector
from edn_jax.runtime import images, progress, storage, video

LPIPS_MIN_SIDE = 64  # crops smaller than this are upsampled before LPIPS (AlexNet needs >= 31 px)
FRAME_SCORES = ("ssim", "body_ssim", "body_lpips", "face_ssim", "face_lpips", "l1", "face_l1", "body_ssim_crop")
BASELINES = ("mean_train_frame", "nearest_train_frame")
BASELINE_COLUMNS = ("ssim", "body_ssim", "body_lpips", "face_lpips")  # per_frame.csv's baseline scores
POSE_STREAMS = ("generated", "real", "nearest_train_frame")  # each with its own detector
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
    videos = split.video_ids[order]
    chunk_frames = min(chunk_frames, int(np.unique(videos, return_counts=True)[1].max()))  # no chunk of padding only
    data = _Splits(split, train_split, height, width, chunk_frames,
                   jnp.asarray(holdout.mean_train_frame(train_split, height, width)),
                   jnp.asarray(dataset.split_keypoints(train_split, height, width)))
    fps = float(split.metadata["videos"][int(videos[0])].get("fps") or 30.0)
    body_size = body_crop_size(height, width)
    score = functools.partial(frame_scores, lpips, face_side=face_side, body_size=body_size)
    candidates = ("generated", "without_face") if renderer.has_face else ("generated",)
    streams = POSE_STREAMS if detector_factory is not None else ()
    with progress.Progress(len(order), f"{desc} on {len(order)} held-out frames", unit="frames") as bar, \
            contextlib.ExitStack() as outputs:
        writer = outputs.enter_context(video.VideoWriter(side_by_side, fps)) if side_by_side else None
        detectors = {stream: detector_factory() for stream in streams}
        for detector in detectors.values():
            if hasattr(detector, "close"):
                outputs.callback(detector.close)
        collected = _Collected(detectors, detect_min_side, writer)
        for vid in np.unique(videos):
            records = order[videos == vid]
            carries = dict.fromkeys(candidates, inference.initial_carry(height, width))
            collected.start_video()
            for start in range(0, len(records), chunk_frames):
                chunk = records[start:start + chunk_frames]
                held, nearest, frames, scores, carries = data.chunk(chunk, renderer, params, carries, score)
                collected.add(int(vid), chunk, split, held, nearest, frames, scores)
                bar.update(len(chunk))

    result = collected.summary(videos, height)
    result.update({"dataset": storage.absolute(dataset_dir), "frame_size_hw": [height, width],
                   "face_crop_px": face_side, "body_crop_hw": list(body_size)})
    return result, collected.rows, np.concatenate(collected.grid, axis=0)


@dataclasses.dataclass(frozen=True)
class _Splits:
    """The held-out split and what the baselines need of the training split, at the evaluated size."""

    split: Any
    train: Any
    height: int
    width: int
    chunk_frames: int
    mean: jax.Array         # the mean training frame
    train_poses: jax.Array  # every training frame's pose, to retrieve the nearest

    def chunk(self, records: np.ndarray, renderer, params, carries: dict, score):
        """One chunk of a held-out video rendered and scored next to the baselines, its padding
        dropped: (held records, nearest training records, {candidate: frames}, {candidate: scores}, carries)."""
        # A short last chunk is padded with its last record, so every call has one shape (one
        # compile); the padding comes after the video's last frame and is dropped.
        n = len(records)
        padding = np.repeat(records[-1:], self.chunk_frames - n)
        padded = holdout.records_at(self.split, np.concatenate([records, padding]), self.height, self.width)
        nearest = np.asarray(holdout.nearest_poses(jnp.asarray(padded["keypoints"]), self.train_poses))
        retrieved = holdout.records_at(self.train, nearest, self.height, self.width)
        baselines = {"mean_train_frame": jnp.broadcast_to(self.mean, padded["frame"].shape),
                     "nearest_train_frame": jnp.asarray(retrieved["frame"])}
        # A model with model.exemplar renders each frame from the retrieval baseline's frame.
        exemplars = (jnp.asarray(exemplar.for_poses(
            retrieved, padded["keypoints"], renderer.model.exemplar_warp,
            params.get("background") if renderer.uses_plate else None)) if renderer.uses_exemplar else None)
        frames, scores, carries = _render_and_score(renderer, params, padded, carries, baselines, score, exemplars)
        held = {k: v[:n] for k, v in padded.items()}
        frames, scores = jax.tree.map(lambda v: v[:n], (frames, scores))
        return held, nearest, frames, scores, carries


class _Collected:
    """What the evaluation keeps of each held-out frame: its row of scores, each stream's detection
    (one detector per stream), the pose asked, its side-by-side panel and the sample grid's rows."""

    def __init__(self, detectors: dict, detect_min_side: int, writer):
        self.detectors, self.detect_min_side, self.writer = detectors, detect_min_side, writer
        self.rows, self.scores_by_chunk, self.grid, self.input_kps = [], [], [], []
        self.detected = {stream: [] for stream in detectors}
        self.previous = None  # the last generated and real frames of the video's chunk before

    def start_video(self) -> None:
        """The next chunk is a video's first: its first frame has no frame before it to change from."""
        self.previous = None

    def add(self, vid: int, records: np.ndarray, split, held: dict, nearest: np.ndarray, frames: dict,
            scores: dict) -> None:
        """One chunk's frames (``records`` of ``split``) with their scores."""
        fake, real = frames["generated"], jnp.asarray(held["frame"])
        change_fake = _frame_change(fake[:1] if self.previous is None else self.previous[0], fake)
        change_real = _frame_change(real[:1] if self.previous is None else self.previous[1], real)
        first, self.previous = self.previous is None, (fake[-1:], real[-1:])
        self.scores_by_chunk.append(scores)
        u8 = {name: np.asarray(images.to_uint8(x)) for name, x in
              (("generated", fake), ("real", real), ("label", held["label"]),
               ("nearest_train_frame", frames["nearest_train_frame"]))}
        for i, record in enumerate(records):
            for stream, detector in self.detectors.items():
                self.detected[stream].append(pose_detector.detect_upscaled(detector, u8[stream][i],
                                                                           self.detect_min_side))
            self.input_kps.append(held["keypoints"][i])
            row = {"video": vid, "frame": int(split.frame_indices[record]), "nearest_train_record": int(nearest[i])}
            row.update({k: float(scores["generated"][k][i]) for k in FRAME_SCORES if k in scores["generated"]})
            row.update({f"{k}_{b}": float(scores[b][k][i]) for b in BASELINES for k in BASELINE_COLUMNS
                        if k in scores[b]})
            row["frame_change_generated"] = np.nan if first and i == 0 else float(change_fake[i])
            row["frame_change_real"] = np.nan if first and i == 0 else float(change_real[i])
            self.rows.append(row)
            panel = np.concatenate([u8["label"][i], u8["generated"][i], u8["real"][i]], axis=1)
            if self.writer is not None:
                self.writer.write(panel)
            if len(self.grid) < GRID_ROWS:
                self.grid.append(np.concatenate([panel, u8["nearest_train_frame"][i]], axis=1))

    def summary(self, videos: np.ndarray, height: int) -> dict:
        """The frames' scores summarised (``_summarise``), with each baseline's and candidate's means."""
        result = _summarise(self.rows, np.stack(self.input_kps), {k: np.stack(v) for k, v in self.detected.items()},
                            videos, height)
        for name in self.scores_by_chunk[0]:
            if name != "generated":
                result.setdefault(name, {}).update(
                    {k: _nanmean(np.concatenate([c[name][k] for c in self.scores_by_chunk]))
                     for k in self.scores_by_chunk[0][name]})
        return result


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
