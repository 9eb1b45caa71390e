"""Pose-frame datasets: what is stored per frame, how videos become splits, and how
training opens them.

The TFDS builders in ``data_builders/`` are thin subclasses of
``PoseFramesBuilder``; everything they share lives here. Records are written in
frame order (``disable_shuffling=True``) as ArrayRecord, so training can fetch
any (t-1, t) pair by index through ``tfds.data_source`` without TensorFlow.
Everything transfer and training need without re-reading frames is stored in the
dataset's metadata: the target's normalization statistics, the per-record
video ids and frame indices (for pairing), and how each video was mapped to the
working resolution.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from configs import default
from edn_jax import synthetic
from edn_jax.errors import EdnError
from edn_jax.pose import layout, normalization, pipeline, render
from edn_jax.runtime import storage, video

SPLITS = ("train", "validation")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
MIN_PERSON_FRACTION = 0.5  # fewer frames with a person than this is an error, not a warning


@dataclasses.dataclass
class PoseFramesConfig(tfds.core.BuilderConfig):
    """How a dataset is built. ``name`` names the build (its directory under the builder)."""

    height: int = 256
    width: int = 256
    val_fraction: float = 0.2        # the last fraction of each video is held out
    image_format: str = "png"        # png (lossless) or jpeg (smaller)
    videos: tuple[str, ...] = ()     # edn_pose_frames: source videos (empty: all videos in manual_dir)
    keypoints: tuple[str, ...] = ()  # pose-mode keypoint files of ``videos``, in order (empty: detect)
    pose: tuple[tuple[str, object], ...] = ()  # overrides of config.pose fields used for detection
    max_frames: int = 0              # per video; 0 = all
    synthetic_seeds: tuple[int, ...] = (0,)  # edn_synthetic: one video per seed
    synthetic_frames: int = 120
    synthetic_fps: float = 30.0

    def validate(self) -> None:
        if self.height < 16 or self.width < 16 or self.height % 2 or self.width % 2:
            raise EdnError(f"dataset size {self.height}x{self.width} is invalid", "use even sizes >= 16, e.g. 256x256")
        if not 0.0 < self.val_fraction < 1.0:
            raise EdnError(f"val_fraction={self.val_fraction} is outside (0, 1)", "use e.g. 0.2")
        if self.image_format not in ("png", "jpeg"):
            raise EdnError(f"image_format={self.image_format!r} is not supported", "use png or jpeg")


@dataclasses.dataclass(frozen=True)
class VideoPoses:
    """One source video: its subject's keypoints and a way to stream its frames again."""

    name: str
    sequence: pipeline.PoseSequence
    frames: Callable[[], Iterator[np.ndarray]]  # streams the RGB frames again


def features(height: int, width: int, image_format: str) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "frame": tfds.features.Image(shape=(height, width, 3), encoding_format=image_format),
        "keypoints": tfds.features.Tensor(shape=(layout.NUM_KEYPOINTS, 3), dtype=np.float32),
        "frame_index": np.int32,
        "video_id": np.int32,
        "face_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "face_valid": np.bool_,
        "detected": np.bool_,  # the body was detected on this frame, not filled in from neighbours
    })


def split_frames(kept: np.ndarray, val_fraction: float) -> dict[str, np.ndarray]:
    """Time-ordered split of one video's kept frame indices: the last ``val_fraction`` of the video is held out."""
    num_frames = int(kept.max()) + 1 if len(kept) else 0
    first_val = num_frames - int(round(val_fraction * num_frames))
    return {"train": kept[kept < first_val], "validation": kept[kept >= first_val]}


class PoseFramesBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared builder: subclasses say where videos come from (``_videos``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Frames, canonical keypoints, face boxes; normalization stats in metadata."}

    def __init__(self, *, file_format: str | None = None, **kwargs):
        # ArrayRecord: random access to temporal pairs (see data_builders/*/README.md).
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _videos(self, dl_manager) -> list[VideoPoses]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            features=features(cfg.height, cfg.width, cfg.image_format),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        cfg.validate()
        videos = self._videos(dl_manager)
        plans, train_kps, videos_meta = [], [], []
        for video_id, clip in enumerate(videos):
            seq = clip.sequence
            tf = render.fit_transform((seq.height, seq.width), (cfg.height, cfg.width), mode="pad")
            kps = render.transform_keypoints(seq.keypoints, tf)
            has_body = kps[:, layout.BODY, 2].max(axis=1) > 0
            if has_body.mean() < MIN_PERSON_FRACTION:
                raise EdnError(
                    f"{clip.name}: a person was found in only {int(has_body.sum())} of {len(kps)} frames",
                    "use footage where the target is visible most of the time, or trim the clip")
            kept = np.flatnonzero(has_body)
            splits = split_frames(kept, cfg.val_fraction)
            plans.append((clip, tf, kps, splits))
            train_kps.append(kps[splits["train"]])
            videos_meta.append({
                "name": clip.name, "source": seq.source, "fps": seq.fps, "source_height": seq.height,
                "source_width": seq.width, "frames": len(kps), "frames_dropped_no_person": int((~has_body).sum()),
                "scale": tf.scale, "offset_x": tf.offset_x, "offset_y": tf.offset_y,
                "train_frames": len(splits["train"]), "validation_frames": len(splits["validation"])})
            if (~has_body).any():
                print(f"{clip.name}: dropped {int((~has_body).sum())} of {len(kps)} frames with no person")
        stats = normalization.pose_statistics(np.concatenate(train_kps))
        self.info.metadata["normalization"] = normalization.stats_to_dict(stats)
        self.info.metadata["videos"] = videos_meta
        self.info.metadata["height"], self.info.metadata["width"] = cfg.height, cfg.width
        for split in SPLITS:  # per record, in stored order: what pairing needs without reading images
            self.info.metadata[f"{split}_video_id"] = [vid for vid, p in enumerate(plans) for _ in p[3][split]]
            self.info.metadata[f"{split}_frame_index"] = [int(t) for p in plans for t in p[3][split]]
        return {split: self._generate_examples(plans, split) for split in SPLITS}

    def _generate_examples(self, plans, split) -> Iterator[tuple[str, dict]]:
        cfg = self.builder_config
        for video_id, (clip, tf, kps, splits) in enumerate(plans):
            wanted = set(int(t) for t in splits[split])
            detected = clip.sequence.detected
            for t, frame in enumerate(clip.frames()):
                if t not in wanted:
                    continue
                box, valid = render.face_box(kps[t], cfg.height, cfg.width)
                yield f"{video_id:04d}_{t:09d}", {
                    "frame": render.transform_image(frame, tf), "keypoints": kps[t], "frame_index": t,
                    "video_id": video_id, "face_box": box, "face_valid": bool(valid),
                    "detected": bool(detected[t]),
                }


def pose_config(overrides=()):
    """The default pose settings with a builder config's overrides applied."""
    config = default.get_config()
    for key, value in overrides:
        if key not in config.pose:
            raise EdnError(f"unknown pose setting {key!r} in the dataset config", "use a field of config.pose")
        config.pose[key] = value
    return config


def find_videos(directory: str) -> list[str]:
    paths = [p for p in storage.glob(storage.join(directory, "*")) if p.lower().endswith(VIDEO_EXTENSIONS)]
    if not paths:
        raise EdnError(f"no videos found in {directory}", f"put target videos ({', '.join(VIDEO_EXTENSIONS)}) there")
    return paths


def detect_video(path: str, pose_overrides=(), max_frames: int = 0, keypoints: str = "") -> VideoPoses:
    """The pose stage on one video, exactly as pose mode runs it; or pose mode's ``keypoints`` file of
    that video, read instead of detecting again."""
    if keypoints:
        seq = pipeline.load_keypoints(keypoints)
        if os.path.abspath(seq.source) != os.path.abspath(path):
            raise EdnError(f"{keypoints} holds the poses of {seq.source}, not of {path}",
                           "give build.keypoints in the order of input.video's videos")
        if max_frames and len(seq.keypoints) > max_frames:
            seq = dataclasses.replace(seq, keypoints=seq.keypoints[:max_frames],
                                      raw_keypoints=seq.raw_keypoints[:max_frames],
                                      tracker_status=seq.tracker_status[:max_frames],
                                      tracker_reasons=seq.tracker_reasons[:max_frames])
    else:
        config = pose_config(pose_overrides)
        config.input.video = path
        config.input.max_frames = max_frames
        seq = pipeline.extract_poses(config)
    return VideoPoses(os.path.basename(path), seq, lambda: video.iter_frames(path, len(seq.keypoints)))


def synthetic_video(seed: int, num_frames: int, height: int, width: int, fps: float) -> VideoPoses:
    config = pose_config()
    config.synthetic.seed, config.synthetic.num_frames = seed, num_frames
    config.synthetic.height, config.synthetic.width, config.synthetic.fps = height, width, fps
    seq = pipeline.extract_poses(config)
    return VideoPoses(f"synthetic_seed{seed}", seq,
                      lambda: (synthetic.render_synthetic_frame(k, height, width) for k in seq.keypoints))


@dataclasses.dataclass(frozen=True)
class OpenedSplit:
    source: object                 # random access: len() and [i] -> record dict
    metadata: dict
    video_ids: np.ndarray          # per record
    frame_indices: np.ndarray      # per record
    stats: normalization.PoseStats  # the target's normalization statistics
    data_dir: str
    name: str                      # the split's name ("train", "validation")


def open_split(dataset_dir: str, split: str) -> OpenedSplit:
    """Opens a built dataset version directory (…/<builder>/<config>/<version>) for random access."""
    if not storage.isfile(storage.join(dataset_dir, "dataset_info.json")):
        raise EdnError(f"no built dataset at {dataset_dir}", "build one with --config.mode=build, or fix the path")
    builder = tfds.builder_from_directory(dataset_dir)
    available = list(builder.info.splits.keys())
    if split not in available:
        raise EdnError(f"split {split!r} does not exist in {dataset_dir}", f"use one of {', '.join(available)}")
    meta = dict(builder.info.metadata)
    return OpenedSplit(
        source=builder.as_data_source(split), metadata=meta,
        video_ids=np.asarray(meta[f"{split}_video_id"], np.int32),
        frame_indices=np.asarray(meta[f"{split}_frame_index"], np.int32),
        stats=normalization.stats_from_dict(meta["normalization"]), data_dir=dataset_dir, name=split)


def split_keypoints(split, height: int, width: int) -> np.ndarray:
    """Every record's keypoints of ``split`` (``open_split``) at a height x width frame, [N, 137, 3],
    read without decoding a single image (the frames are stored at the dataset's size, ``metadata``)."""
    builder = tfds.builder_from_directory(split.data_dir)
    source = builder.as_data_source(split.name, decoders={"frame": tfds.decode.SkipDecoding()})
    stored = (int(split.metadata["height"]), int(split.metadata["width"]))
    tf = render.fit_transform(stored, (height, width), "pad")
    kps = np.stack([np.asarray(source[i]["keypoints"], np.float32) for i in range(len(source))])
    return kps if stored == (height, width) else render.transform_keypoints(kps, tf)
