"""Motion transfer: a source dancer's motion rendered as the trained target, to H.264 videos.

``run_transfer_mode(config, workdir)`` renders every configured source (a video, a glob, a
list file ``@list.txt``, pose-mode keypoint files, OpenPose JSON, or a synthetic dancer) with
the model trained in ``config.transfer.model_workdir`` and writes one ``<source name>.mp4`` per
source into ``workdir`` (plus ``<name>_side_by_side.mp4``: source | normalized stick figure |
output, with ``transfer.side_by_side``) and ``transfer_summary.json``.

Per source, two passes keep memory flat in video length:

1. poses: the source is decoded frame by frame through the pose stage's detector, tracker
   and cleanup (as pose mode), keeping only keypoints. Frames where the detector found
   nobody get the cleanup's interpolated pose, else the nearest valid pose is held. The
   poses are fit into the model's frame and globally normalized (the paper's Sec. 3.2) to
   the target's statistics from its training dataset; the source's own statistics come
   from its detected poses.
2. render: stick figures and face boxes are drawn a chunk at a time and rendered by one
   compiled, vmapped ``lax.scan`` over ``transfer.chunk_frames`` frames for ``B`` videos at
   once (sharded over a mesh of the local devices along its data axis); each video's
   carry (its previous output) is kept on the devices between chunks and reset when a
   slot takes the next video, so the function compiles once for the whole batch. Outputs
   stream into the encoder; the source's audio track is copied in at the end.

Outputs are written atomically (a temporary name, renamed when complete), so an
interrupted render leaves no file that looks finished. A source whose outputs already
exist is skipped unless ``config.overwrite``; a failing source does not stop the others,
and all failures are listed at the end (then ``EdnError``, exit status 2).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from edn_jax import inference, progress, video
from edn_jax.errors import EdnError
from edn_jax.fileio import atomic_path
from edn_jax.inference import to_uint8
from edn_jax.pose import layout, normalization, pipeline, render

SUMMARY_FILE = "transfer_summary.json"
SIDE_BY_SIDE_SUFFIX = "_side_by_side"
_GLOB_CHARS = "*?["


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One source to transfer from, before anything is read."""

    name: str   # the output's stem
    kind: str   # video | keypoints | openpose | synthetic
    path: str   # the file or directory ("" for synthetic)

    @property
    def label(self) -> str:
        return self.path or self.name


def _entries(text: str, list_dir: str | None) -> list[str]:
    """Paths named by one ``transfer.source`` item: a path, or the matches of a glob."""
    path = os.path.expanduser(text)
    if list_dir is not None and not os.path.isabs(path):
        path = os.path.join(list_dir, path)
    if any(c in path for c in _GLOB_CHARS):
        matches = sorted(glob.glob(path))
        if not matches:
            raise EdnError(f"transfer.source pattern {text!r} matches no file", "check the pattern and the directory")
        return matches
    return [path]


def _read_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise EdnError(f"source list not found: {path}", "pass @FILE with one video or keypoint file per line")
    with open(path) as f:
        lines = [line.strip() for line in f]
    items = [line for line in lines if line and not line.startswith("#")]
    if not items:
        raise EdnError(f"source list {path} names no source", "put one video or keypoint file per line")
    out = []
    for item in items:
        out += _entries(item, os.path.dirname(os.path.abspath(path)))
    return out


def _spec_for(path: str) -> SourceSpec:
    if os.path.isdir(path):
        return SourceSpec(os.path.basename(os.path.normpath(path)), "openpose", path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if path.lower().endswith(".npz"):
        if stem == pipeline.KEYPOINTS_FILE[:-4]:  # pose mode's keypoints.npz: named after its workdir
            stem = os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
        return SourceSpec(stem, "keypoints", path)
    return SourceSpec(stem, "video", path)


def resolve_sources(config) -> list[SourceSpec]:
    """The sources ``config.transfer.source`` names, in order.

    Comma-separated items, each a video, a pose-mode keypoint file (.npz), an OpenPose JSON
    directory, a glob of those, or ``@FILE`` (one per line, relative to FILE's directory).
    Empty: ``input.openpose_dir`` if set, else the synthetic dancer ``transfer.synthetic_seed``.
    """
    t = config.transfer
    items = [s.strip() for s in str(t.source).split(",") if s.strip()]
    paths: list[str] = []
    for item in items:
        paths += _read_list(os.path.expanduser(item[1:])) if item.startswith("@") else _entries(item, None)
    if items:
        specs = [_spec_for(p) for p in paths]
    elif config.input.openpose_dir:
        specs = [SourceSpec(os.path.basename(os.path.normpath(config.input.openpose_dir)), "openpose",
                            config.input.openpose_dir)]
    else:
        specs = [SourceSpec(f"synthetic_seed{t.synthetic_seed}", "synthetic", "")]
    seen: dict[str, SourceSpec] = {}
    for spec in specs:
        if spec.name in seen and seen[spec.name].path != spec.path:
            raise EdnError(f"sources {seen[spec.name].label} and {spec.label} would both write {spec.name}.mp4",
                           "rename one of them, or transfer them into different --workdir directories")
        seen.setdefault(spec.name, spec)
    return list(seen.values())  # a source named twice is rendered once


def output_paths(config, workdir: str, spec: SourceSpec) -> dict[str, str]:
    outputs = {"video": os.path.join(workdir, spec.name + ".mp4")}
    if config.transfer.side_by_side:
        outputs["side_by_side"] = os.path.join(workdir, spec.name + SIDE_BY_SIDE_SUFFIX + ".mp4")
    return outputs


# ----------------------------------------------------------------------------- the target


@dataclasses.dataclass(frozen=True)
class Target:
    """The trained target: its model and its pose statistics in the model's frame."""

    model: object                  # train.TrainedModel
    stats: normalization.PoseStats
    dataset_dir: str

    @property
    def height(self) -> int:
        return self.model.stage.height

    @property
    def width(self) -> int:
        return self.model.stage.width


def target_dataset_dir(config, model_workdir: str) -> str:
    """The dataset the target was trained on: ``data.dataset_dir``, else the one its training run used."""
    if config.data.dataset_dir:
        return config.data.dataset_dir
    summary = os.path.join(model_workdir, "train_summary.json")
    if os.path.isfile(summary):
        try:
            with open(summary) as f:
                directory = json.load(f).get("dataset", "")
        except (OSError, ValueError) as e:
            raise EdnError(f"cannot read {summary} ({e})", "pass --config.data.dataset_dir=<the training dataset>")
        if directory:
            # Relative paths are relative to where training ran; also try them under the model workdir.
            candidates = [directory] if os.path.isabs(directory) else [
                directory, os.path.join(model_workdir, directory),
                *([os.path.join(model_workdir, *directory.split(os.sep)[directory.split(os.sep).index("tfds"):])]
                  if "tfds" in directory.split(os.sep) else [])]
            return next((c for c in candidates if os.path.isfile(os.path.join(c, "dataset_info.json"))),
                        candidates[0])
    from edn_jax import train

    return str(train.training_builder(config, model_workdir).data_dir)


def stats_in_frame(stats: normalization.PoseStats, tf: render.FrameTransform) -> normalization.PoseStats:
    """Pose statistics mapped through a frame transform (image y/x positions move, lengths scale)."""
    s = np.float32(tf.scale)
    cx = np.float32(0.5 * tf.scale - 0.5 + tf.offset_x)
    cy = np.float32(0.5 * tf.scale - 0.5 + tf.offset_y)
    f = lambda v: np.float32(v)  # noqa: E731
    return normalization.PoseStats(
        ankle_far=f(stats.ankle_far) * s + cy, ankle_close=f(stats.ankle_close) * s + cy,
        height_far=f(stats.height_far) * s, height_close=f(stats.height_close) * s,
        center_x=f(stats.center_x) * s + cx, num_valid=f(stats.num_valid))


def load_target(config) -> Target:
    """The trained model in ``transfer.model_workdir`` and its target's pose statistics at its frame size."""
    from edn_jax import dataset, train

    workdir = config.transfer.model_workdir
    if not workdir:
        raise EdnError("transfer.model_workdir is empty",
                       "pass --config.transfer.model_workdir=<the --workdir the target was trained in>")
    if not os.path.isdir(workdir):
        raise EdnError(f"transfer.model_workdir {workdir} does not exist", "pass the --workdir of a training run")
    model = train.load_trained_model(config, workdir)
    directory = target_dataset_dir(config, workdir)
    if not os.path.isfile(os.path.join(directory, "dataset_info.json")):
        raise EdnError(f"the target's training dataset is not at {directory}",
                       "pass --config.data.dataset_dir=<the dataset the model was trained on>")
    split = dataset.open_split(directory, "train")
    size = (int(split.metadata.get("height", model.stage.height)), int(split.metadata.get("width", model.stage.width)))
    tf = render.fit_transform(size, (model.stage.height, model.stage.width), "pad")
    return Target(model, stats_in_frame(split.stats, tf), directory)


# ----------------------------------------------------------------------------- poses


@dataclasses.dataclass(frozen=True)
class PreparedSource:
    """A source's poses ready to render, and how to stream its frames again."""

    spec: SourceSpec
    keypoints: np.ndarray          # [T, 137, 3] in the model frame, normalized to the target: what is rendered
    source_keypoints: np.ndarray   # [T, 137, 3] in the model frame before normalization (gaps filled)
    fps: float
    transform: render.FrameTransform  # source frame -> model frame
    no_person: np.ndarray          # [T] bool: nobody was detected on the frame
    held: np.ndarray               # [T] bool: no pose even after gap filling; the nearest valid pose is held
    frames: Callable[[], Iterator[np.ndarray]] | None  # the source's RGB frames again (None: poses only)
    media: str | None              # the video file frames and audio come from
    normalized: bool

    @property
    def num_frames(self) -> int:
        return len(self.keypoints)

    @property
    def interpolated(self) -> np.ndarray:
        """[T] bool: nobody detected, pose interpolated by the cleanup's gap fill."""
        return self.no_person & ~self.held


def _has_body(keypoints: np.ndarray) -> np.ndarray:
    return keypoints[:, layout.BODY, 2].max(axis=1) > 0


def hold_nearest_pose(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints with every frame without a body replaced by the nearest frame's pose, [T] held mask).

    Ties go to the earlier frame. Raises EdnError when no frame has a body.
    """
    has = _has_body(keypoints)
    if not has.any():
        raise EdnError(f"no person in any of the {len(keypoints)} frames", "use a source where a person is visible")
    n = len(keypoints)
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(has, idx, -1))
    nxt = np.minimum.accumulate(np.where(has, idx, n)[::-1])[::-1]
    d_prev = np.where(prev >= 0, idx - prev, 2 * n + 1)
    d_next = np.where(nxt < n, nxt - idx, 2 * n + 1)
    source = np.where(d_prev <= d_next, prev, nxt)
    return keypoints[source], ~has


def _source_config(config, spec: SourceSpec):
    """A copy of ``config`` whose pose input is this source (the config's own input is the target's)."""
    cfg = config.copy_and_resolve_references()
    cfg.input.video = spec.path if spec.kind == "video" else ""
    cfg.input.openpose_dir = spec.path if spec.kind == "openpose" else ""
    return cfg


def _video_frames(path: str, count: int) -> Callable[[], Iterator[np.ndarray]]:
    return lambda: video.iter_frames(path, count)


def source_poses(config, spec: SourceSpec):
    """(PoseSequence in the source's frame, frame stream factory or None, media path or None)."""
    limit = config.input.max_frames or None
    if spec.kind == "video":
        seq = pipeline.extract_poses(_source_config(config, spec))  # streams: only keypoints are kept
        return seq, _video_frames(spec.path, len(seq.keypoints)), spec.path
    if spec.kind == "openpose":
        return pipeline.extract_poses(_source_config(config, spec)), None, None
    from edn_jax import synthetic

    if spec.kind == "synthetic":
        t, s = config.transfer, config.synthetic
        frames = min(t.synthetic_frames, limit) if limit else t.synthetic_frames
        kps = synthetic.synthetic_keypoints(t.synthetic_seed, frames, s.height, s.width, s.fps)
        seq = pipeline.PoseSequence(kps, kps, float(s.fps), s.height, s.width, f"synthetic:{t.synthetic_seed}")
        return seq, lambda: (synthetic.render_synthetic_frame(k, s.height, s.width, t.synthetic_appearance)
                             for k in kps), None
    seq = pipeline.load_keypoints(spec.path)
    if limit:
        seq = dataclasses.replace(seq, keypoints=seq.keypoints[:limit], raw_keypoints=seq.raw_keypoints[:limit])
    if not len(seq.keypoints):
        raise EdnError(f"{spec.path} holds no frames", "re-run pose mode on a video with frames")
    if seq.source.startswith("synthetic:"):
        raw = seq.raw_keypoints
        appearance = config.transfer.synthetic_appearance
        return seq, lambda: (synthetic.render_synthetic_frame(k, seq.height, seq.width, appearance) for k in raw), None
    if os.path.isfile(seq.source):  # the video the keypoints came from, if it is still there
        try:
            info = video.probe_video(seq.source)
        except EdnError:
            info = None
        if info is not None and (info.height, info.width) == (seq.height, seq.width):
            return seq, _video_frames(seq.source, len(seq.keypoints)), seq.source
    return seq, None, None


def normalize_to_target(keypoints: np.ndarray, target_stats: normalization.PoseStats,
                        source_stats: normalization.PoseStats | None = None) -> np.ndarray:
    """Global pose normalization of model-frame keypoints to the target's statistics."""
    if source_stats is None:
        source_stats = normalization.pose_statistics(keypoints)
    return np.asarray(normalization.normalize_sequence(keypoints, source_stats, target_stats), np.float32)


def prepare_source(config, spec: SourceSpec, target: Target) -> PreparedSource:
    """Pass 1: the source's poses, gaps filled, fit into the model's frame and normalized to the target."""
    seq, frames, media = source_poses(config, spec)
    no_person = ~seq.detected
    try:
        filled, held = hold_nearest_pose(seq.keypoints)
    except EdnError as e:
        raise EdnError(f"{spec.label}: {e}")
    tf = render.fit_transform((seq.height, seq.width), (target.height, target.width), "pad")
    in_frame = render.transform_keypoints(filled, tf)
    normalize = bool(config.transfer.normalize) and float(target.stats.num_valid) > 0
    if normalize:
        # The source's statistics from its own poses, not from copies held over frames without a person.
        src_stats = normalization.pose_statistics(in_frame[~held])
        keypoints = normalize_to_target(in_frame, target.stats, src_stats)
    else:
        keypoints = in_frame
    return PreparedSource(spec, keypoints, in_frame, float(seq.fps), tf, no_person, held, frames, media, normalize)


def frame_count_estimate(config, spec: SourceSpec) -> int:
    """A cheap frame count for the progress bar's total (0 when unknown); corrected once poses are read."""
    limit = config.input.max_frames or None
    try:
        if spec.kind == "synthetic":
            n = config.transfer.synthetic_frames
        elif spec.kind == "video":
            n = video.probe_video(spec.path).num_frames
        elif spec.kind == "keypoints":
            with np.load(spec.path) as z:
                n = len(z["keypoints"])
        else:
            n = len(glob.glob(os.path.join(spec.path, "*_keypoints.json")))
    except (EdnError, OSError, ValueError, KeyError):
        return 0
    return min(n, limit) if limit else n


# ----------------------------------------------------------------------------- audio


def has_audio(path: str) -> bool:
    """Whether ffmpeg finds an audio stream in ``path``."""
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path],
                           capture_output=True, text=True, check=False)
    return any(line.strip().startswith("Stream #") and "Audio:" in line for line in probe.stderr.splitlines())


def mux_audio(video_path: str, audio_source: str, out_path: str) -> None:
    """``video_path``'s video (copied) with ``audio_source``'s first audio track (AAC), cut to the video."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", video_path,
           "-i", audio_source, "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy", "-c:a", "aac", "-shortest",
           "-movflags", "+faststart", "-f", "mp4", out_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        raise EdnError(f"cannot copy the audio of {audio_source} ({last})",
                       "pass --config.transfer.keep_audio=False to write the video without sound")


class OutputVideo:
    """One output mp4, streamed; with ``audio_from`` that file's audio is muxed in.

    ``complete`` closes the encoder (and muxes the audio) into a temporary file, ``commit``
    renames it onto ``path``; ``abort`` removes every temporary file. So ``path`` shows a
    finished video or nothing new, and a job's outputs can all be completed before any
    is committed.
    """

    def __init__(self, path: str, fps: float, audio_from: str | None = None):
        self.path, self.audio_from = path, audio_from
        self._atomic = atomic_path(path, suffix=".mp4")
        self._tmp = self._atomic.__enter__()
        self._video_path = self._tmp[:-4] + ".video.mp4" if audio_from else self._tmp
        self._writer = video.VideoWriter(self._video_path, fps)
        self._completed = self._committed = False
        try:
            self._writer.__enter__()
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    def complete(self) -> None:
        self._completed = True
        self._writer.__exit__(None, None, None)
        if self.audio_from:
            mux_audio(self._video_path, self.audio_from, self._tmp)
            os.remove(self._video_path)

    def commit(self) -> None:
        self._committed = True
        self._atomic.__exit__(None, None, None)

    def abort(self, error: BaseException) -> None:
        """Removes every temporary file; ``path`` is left as it was (unless already committed)."""
        if self._committed:
            return
        if not self._completed:
            try:
                self._writer.__exit__(type(error), error, error.__traceback__)
            except Exception:  # noqa: BLE001 - cleanup: the original error is what matters
                pass
        if self._video_path != self._tmp and os.path.exists(self._video_path):
            os.remove(self._video_path)
        self._committed = True
        self._atomic.__exit__(type(error), error, error.__traceback__)


# ----------------------------------------------------------------------------- rendering


def render_devices(slots: int, devices=None) -> list:
    """The devices ``slots`` videos are spread over: the most local devices that divide them evenly."""
    devices = list(devices if devices is not None else jax.local_devices())
    count = max(d for d in range(1, min(len(devices), slots) + 1) if slots % d == 0)
    return devices[:count]


@functools.partial(jax.jit, static_argnames=("renderer", "sharding", "apply_face"), donate_argnames=("carry",))
def render_batch(renderer, params, labels, boxes, valid, carry, reset, sharding=None, apply_face: bool = True):
    """``inference.render_chunk`` over a leading video axis: uint8 stick figures [B, T, H, W, 3], face boxes
    [B, T, 4] and valid [B, T], per-video carries ([B, 1, H, W, 3] twice) -> (uint8 outputs [B, T, H, W, 3],
    carry). ``reset[b]`` starts video b from a blank previous frame; ``sharding`` (static) keeps the
    outputs and carry split over the video axis."""
    h, w = labels.shape[2:4]
    keep = ~reset[:, None, None, None, None]
    carry = tuple(jnp.where(keep, c, blank[None]) for c, blank in zip(carry, inference.initial_carry(h, w)))
    labels = labels.astype(jnp.float32) / 127.5 - 1.0
    one_video = functools.partial(inference.render_chunk, renderer, params, apply_face=apply_face)
    outputs, carry = jax.vmap(one_video)(labels, boxes, valid, carry)
    outputs = to_uint8(outputs)
    if sharding is not None:
        outputs, carry = jax.lax.with_sharding_constraint((outputs, carry), sharding)
    return outputs, carry


class BatchRenderer:
    """``slots`` videos rendered side by side, ``chunk`` frames per call, through one compiled function.

    The video axis is sharded over a mesh of the local devices (data axis); params are
    replicated. Each slot's carry stays on the devices between calls; ``reset[i]`` starts
    slot i from a blank previous frame (a new video). ``render_batch`` is jitted at module
    level, so renderers of the same model and shapes share its compilation.
    """

    def __init__(self, model, slots: int, chunk: int, devices=None, apply_face: bool = True):
        from edn_jax import train

        if slots < 1 or chunk < 1:
            raise ValueError(f"slots={slots} and chunk={chunk} must be >= 1")
        self.renderer, self.apply_face = model.renderer, apply_face
        self.slots, self.chunk = slots, chunk
        self.height, self.width = model.stage.height, model.stage.width
        self.mesh = Mesh(np.array(render_devices(slots, devices)), (train.DATA_AXIS,))
        replicated, self.sharding = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P(train.DATA_AXIS))
        # The restored params may live on other devices (or other hosts): one replica, put on this mesh.
        host = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a,
                            model.params)
        self.params = jax.device_put(host, replicated)
        blank = inference.initial_carry(self.height, self.width)
        self.carry = jax.device_put(tuple(np.broadcast_to(np.asarray(b)[None], (slots,) + b.shape) for b in blank),
                                    self.sharding)

    def dispatch(self, labels: np.ndarray, boxes: np.ndarray, valid: np.ndarray, reset: np.ndarray):
        """Starts rendering uint8 stick figures [B, T, H, W, 3] (face boxes [B, T, 4], valid [B, T]); returns
        the uint8 outputs [B, T, H, W, 3] as a device array (asynchronous: ``np.asarray`` waits)."""
        inputs = jax.device_put((labels, boxes, valid, np.asarray(reset, bool)), self.sharding)
        outputs, self.carry = render_batch(self.renderer, self.params, *inputs[:3], self.carry, inputs[3],
                                           sharding=self.sharding, apply_face=self.apply_face)
        return outputs

    def __call__(self, labels, boxes, valid, reset) -> np.ndarray:
        return np.asarray(self.dispatch(labels, boxes, valid, reset))


@dataclasses.dataclass
class SourceResult:
    """What happened to one source (for the report and ``transfer_summary.json``)."""

    spec: SourceSpec
    status: str                       # rendered | skipped | failed
    outputs: dict[str, str]
    error: str = ""
    frames: int = 0
    fps: float = 0.0
    frames_without_person: int = 0
    interpolated: int = 0
    held: int = 0
    audio: bool = False
    normalized: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["source"], d["name"] = self.spec.label, self.spec.name
        del d["spec"]
        return d


class _Job:
    """One source being rendered in a slot: its chunks' inputs, and its output writers."""

    def __init__(self, config, source: PreparedSource, outputs: dict[str, str], result: SourceResult,
                 chunk: int, height: int, width: int):
        self.source, self.result, self.chunk = source, result, chunk
        self.height, self.width = height, width
        self.position = 0          # frames handed to the renderer
        self.failed = False
        self.started = time.monotonic()
        keep_audio = config.transfer.keep_audio and source.media is not None and has_audio(source.media)
        audio = source.media if keep_audio else None
        result.audio = bool(audio)
        self.writers: dict[str, OutputVideo] = {}
        try:
            self.writers["video"] = OutputVideo(outputs["video"], source.fps, audio)
            if "side_by_side" in outputs:
                self.writers["side_by_side"] = OutputVideo(outputs["side_by_side"], source.fps, audio)
        except BaseException as e:
            self.abort(e)
            raise
        self.frames = source.frames() if "side_by_side" in outputs and source.frames is not None else None

    @property
    def dispatched_all(self) -> bool:
        return self.position >= self.source.num_frames

    def next_chunk(self):
        """(stick figures uint8 [chunk, H, W, 3], face boxes, valid, frames used): the chunk after the last
        one, its tail padded with its last frame so every call has the same shape."""
        kps = self.source.keypoints[self.position:self.position + self.chunk]
        n = len(kps)
        labels = render.render_stick_figures(kps, self.height, self.width)
        boxes, valid = render.face_boxes(kps, self.height, self.width)
        if n < self.chunk:
            pad = np.full(self.chunk - n, n - 1)
            labels = np.concatenate([labels, labels[pad]])
            boxes, valid = np.concatenate([boxes, boxes[pad]]), np.concatenate([valid, valid[pad]])
        self.position += n
        return labels, boxes, valid, n

    def _source_panel(self, t: int) -> np.ndarray:
        if self.frames is not None:
            frame = next(self.frames, None)
            if frame is None:
                raise EdnError(f"{self.source.spec.label} ended before frame {t + 1} of its poses",
                               "the video changed since its poses were read; rerun")
            return render.transform_image(frame, self.source.transform)
        return render.render_stick_figure(self.source.source_keypoints[t], self.height, self.width)

    def write(self, outputs: np.ndarray, labels: np.ndarray, n: int) -> None:
        """The first ``n`` rendered frames of a chunk (uint8), and their stick figures for side by side."""
        first = self.writers["video"].frames_written
        for i in range(n):
            self.writers["video"].write(outputs[i])
            if "side_by_side" in self.writers:
                panel = self._source_panel(first + i)
                self.writers["side_by_side"].write(np.concatenate([panel, labels[i], outputs[i]], axis=1))

    @property
    def done(self) -> bool:
        return self.writers["video"].frames_written >= self.source.num_frames

    def finish(self) -> None:
        for writer in self.writers.values():  # every output encoded before any appears
            writer.complete()
        for writer in self.writers.values():
            writer.commit()
        self.result.status = "rendered"
        self.result.seconds = time.monotonic() - self.started

    def abort(self, error: BaseException) -> None:
        self.failed = True
        for writer in self.writers.values():
            writer.abort(error)


def _error_text(error: BaseException) -> str:
    if isinstance(error, EdnError):
        return str(error)
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    return " ".join(f"{type(error).__name__}: {error}".split())


def render_sources(config, target: Target, specs: list[SourceSpec], outputs: dict[str, dict[str, str]],
                   results: dict[str, SourceResult], renderer: BatchRenderer | None = None) -> BatchRenderer | None:
    """Pass 1 and 2 for ``specs``: each slot of the batch renderer takes the next source when free.

    Per-source failures are recorded in ``results`` and the others go on; anything else
    (e.g. Ctrl-C) aborts every unfinished output and propagates.
    """
    t = config.transfer
    if not specs:
        return renderer
    if renderer is None:
        slots = min(t.batch_videos or jax.local_device_count(), len(specs))
        renderer = BatchRenderer(target.model, slots, t.chunk_frames)
    B, T, H, W = renderer.slots, renderer.chunk, renderer.height, renderer.width
    pending = collections.deque(specs)
    slots: list[_Job | None] = [None] * B
    live: set[_Job] = set()

    def fail(job_or_spec, error: BaseException) -> None:
        job = job_or_spec if isinstance(job_or_spec, _Job) else None
        result = job.result if job else results[job_or_spec.name]
        if job is not None:
            live.discard(job)
            job.abort(error)
        result.status, result.error = "failed", _error_text(error)
        print(f"failed: {result.spec.label}: {result.error}", file=sys.stderr)

    estimates = {s.name: frame_count_estimate(config, s) for s in specs}
    bar = progress.Progress(sum(estimates.values()),
                            f"rendering {len(specs)} video(s) with the {target.model.stage.name} model")

    def fill_slots(reset: np.ndarray) -> None:
        for i in range(B):
            while (slots[i] is None or slots[i].failed or slots[i].dispatched_all) and pending:
                spec = pending.popleft()
                result = results[spec.name]
                try:
                    source = prepare_source(config, spec, target)
                    result.frames, result.fps, result.normalized = source.num_frames, source.fps, source.normalized
                    result.frames_without_person = int(source.no_person.sum())
                    result.interpolated, result.held = int(source.interpolated.sum()), int(source.held.sum())
                    job = _Job(config, source, outputs[spec.name], result, T, H, W)
                except Exception as e:  # noqa: BLE001 - one bad source must not stop the batch
                    bar.total = (bar.total or 0) - estimates[spec.name]
                    fail(spec, e)
                    continue
                bar.total = (bar.total or 0) + source.num_frames - estimates[spec.name]
                slots[i] = job
                live.add(job)
                reset[i] = True
            if slots[i] is not None and (slots[i].failed or slots[i].dispatched_all):
                slots[i] = None

    def inputs():
        """The next call's inputs and, per slot, (job, frames, stick figures) to write afterwards."""
        reset = np.zeros(B, bool)
        fill_slots(reset)
        labels = np.zeros((B, T, H, W, 3), np.uint8)
        boxes, valid = np.zeros((B, T, 4), np.float32), np.zeros((B, T), bool)
        work = []
        for i, job in enumerate(slots):
            if job is None:
                continue
            try:
                labels[i], boxes[i], valid[i], n = job.next_chunk()
            except Exception as e:  # noqa: BLE001
                fail(job, e)
                slots[i] = None
                continue
            work.append((i, job, n, labels[i]))
        return (labels, boxes, valid, reset), work

    try:
        batch, work = inputs()
        while work:
            outputs_dev = renderer.dispatch(*batch)
            batch, next_work = inputs()  # drawn while the devices render
            rendered = np.asarray(outputs_dev)
            for i, job, n, labels in work:
                if job.failed:
                    continue
                try:
                    job.write(rendered[i], labels, n)
                    bar.update(n)
                    if job.done:
                        live.discard(job)
                        job.finish()
                except Exception as e:  # noqa: BLE001
                    fail(job, e)
            work = next_work
    except BaseException as e:
        for job in list(live):
            job.abort(e)
        raise
    finally:
        bar.close()
    return renderer


# ----------------------------------------------------------------------------- the mode


def validate_transfer_config(config) -> None:
    if "transfer" not in config:
        raise EdnError("the config has no transfer section", "use configs/transfer.py, or add config.transfer fields")
    from edn_jax import synthetic

    t = config.transfer
    checks = [
        (t.chunk_frames >= 1, f"transfer.chunk_frames={t.chunk_frames} must be >= 1", "use e.g. 32"),
        (t.batch_videos >= 0, f"transfer.batch_videos={t.batch_videos} must be >= 0",
         "use 0 for one video per device"),
        (t.synthetic_frames >= 1, f"transfer.synthetic_frames={t.synthetic_frames} must be >= 1", "use e.g. 120"),
        (t.synthetic_seed >= 0, f"transfer.synthetic_seed={t.synthetic_seed} must be >= 0", "use e.g. 1"),
        (0 <= t.synthetic_appearance < len(synthetic.APPEARANCES),
         f"transfer.synthetic_appearance={t.synthetic_appearance} is not one of 0..{len(synthetic.APPEARANCES) - 1}",
         "pick an appearance in that range"),
        (config.input.max_frames >= 0, f"input.max_frames={config.input.max_frames} is negative",
         "use 0 for all frames"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)


def _describe(r: SourceResult) -> str:
    if r.status == "skipped":
        return f"skipped  {r.spec.name}: {r.error}"
    if r.status == "failed":
        return f"failed   {r.spec.name}: {r.error}"
    gaps = (f", {r.frames_without_person} frames without a person ({r.interpolated} interpolated, {r.held} held)"
            if r.frames_without_person else "")
    extras = ("; audio copied" if r.audio else "") + ("" if r.normalized else "; poses not normalized")
    files = ", ".join(os.path.abspath(p) for p in r.outputs.values())
    return f"rendered {r.spec.name}: {r.frames} frames at {r.fps:.2f} fps{gaps}{extras} -> {files}"


def run_transfer_mode(config, workdir: str) -> list[SourceResult]:
    """Transfer mode: renders every source as the target into ``workdir``; returns the per-source results.

    Raises EdnError when every source's outputs already exist (without ``config.overwrite``) or
    when any source failed (after rendering the others).
    """
    validate_transfer_config(config)
    specs = resolve_sources(config)
    if jax.process_count() > 1:  # each process renders its share on its own devices
        specs = specs[jax.process_index()::jax.process_count()]
    results: dict[str, SourceResult] = {}
    outputs = {s.name: output_paths(config, workdir, s) for s in specs}
    to_render = []
    sources_abs = {os.path.abspath(s.path) for s in specs if s.path}
    for spec in specs:
        paths = outputs[spec.name]
        result = results[spec.name] = SourceResult(spec, "pending", paths)
        clash = [p for p in paths.values() if os.path.abspath(p) in sources_abs]
        existing = [p for p in paths.values() if os.path.exists(p)]
        if clash:
            result.status = "failed"
            result.error = str(EdnError(f"{spec.label}: the output {clash[0]} is a source",
                                        "transfer into another --workdir"))
        elif existing and not config.overwrite:
            result.status = "skipped"
            result.error = f"{os.path.abspath(existing[0])} exists (pass --config.overwrite=True to replace it)"
        else:
            to_render.append(spec)
    if not to_render and not any(r.status == "failed" for r in results.values()):
        first = next(iter(results.values()))
        raise EdnError(f"{workdir} already holds the transfer output{'s' if len(results) > 1 else ''} "
                       f"({os.path.basename(first.outputs['video'])}{', ...' if len(results) > 1 else ''})",
                       "choose another --workdir or pass --config.overwrite=True to replace them")
    os.makedirs(workdir, exist_ok=True)
    if to_render:
        target = load_target(config)
        print(f"target: {target.model.stage.title} model from {os.path.abspath(config.transfer.model_workdir)}, "
              f"pose statistics from {target.dataset_dir}")
        render_sources(config, target, to_render, outputs, results)

    ordered = [results[s.name] for s in specs]
    summary_name = SUMMARY_FILE if jax.process_count() == 1 else f"transfer_summary.process{jax.process_index()}.json"
    with atomic_path(os.path.join(workdir, summary_name)) as tmp, open(tmp, "w") as f:
        json.dump({"model_workdir": os.path.abspath(config.transfer.model_workdir),
                   "sources": [r.to_json() for r in ordered]}, f, indent=2)
    counts = collections.Counter(r.status for r in ordered)
    print(f"transfer: {counts['rendered']} rendered, {counts['skipped']} skipped (outputs exist), "
          f"{counts['failed']} failed; summary {os.path.abspath(os.path.join(workdir, summary_name))}")
    for r in ordered:
        print("  " + _describe(r))
    failed = [r for r in ordered if r.status == "failed"]
    if len(ordered) == 1 and failed:
        raise EdnError(failed[0].error)
    if failed:
        listed = ", ".join(f"{r.spec.label} ({r.error})" for r in failed)
        raise EdnError(f"{len(failed)} of {len(ordered)} sources failed: {listed}",
                       "fix or remove them and rerun the same command: finished videos are skipped")
    return ordered
