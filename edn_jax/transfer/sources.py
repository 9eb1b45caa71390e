"""Motion sources: what ``transfer.source`` names, and each source's poses ready to render.

A source is a video, a glob, a list file ``@list.txt``, a pose-mode keypoint file, an
OpenPose JSON directory, or a synthetic dancer. ``prepare_source`` is the first of
transfer's two passes: the source is decoded frame by frame through the pose stage's
detector, tracker and cleanup (as pose mode), keeping only keypoints. Frames where the
detector found nobody get the cleanup's interpolated pose, else the nearest valid pose
is held, or (``transfer.no_person = "plate"``) left empty, so the frame shows the plate
and nobody. The poses are fit into the model's frame and globally normalized (the paper's
Sec. 3.2) to the target's statistics; the source's own statistics come from its
detected poses. With ``transfer.travel = "fit"`` the source's horizontal travel is fit
into the range where the target was seen and every figure is kept inside the frame;
``"full"`` keeps the source's whole travel, scaled, even where it leaves the frame.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np

from edn_jax import filenames, synthetic
from edn_jax.errors import EdnError
from edn_jax.pose import layout, normalization, paper_normalization, pipeline, render
from edn_jax.runtime import storage, video

NORMALIZATIONS = ("robust", "paper")  # transfer.normalization: edn_jax.pose.normalization, paper_normalization
TRAVELS = ("fit", "full")  # transfer.travel: fit into the target's range and the frame | the source's whole travel
NO_PERSON_RULES = ("hold", "plate")  # transfer.no_person: the nearest pose held | an empty figure (the plate)
TRAVEL_SECONDS = 0.5  # the travel is the ankles' position averaged over this long (not each step)
SIDE_BY_SIDE_SUFFIX = "_side_by_side"
_GLOB_CHARS = "*?["


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
    path = text if storage.is_remote(text) else os.path.expanduser(text)
    if list_dir is not None and not os.path.isabs(path) and not storage.is_remote(path):
        path = os.path.join(list_dir, path)
    if any(c in path for c in _GLOB_CHARS):
        matches = storage.glob(path)
        if not matches:
            raise EdnError(f"transfer.source pattern {text!r} matches no file", "check the pattern and the directory")
        return matches
    return [path]


def _read_list(path: str) -> list[str]:
    if not storage.isfile(path):
        raise EdnError(f"source list not found: {path}", "pass @FILE with one video or keypoint file per line")
    with storage.open(path) as f:
        lines = [line.strip() for line in f]
    items = [line for line in lines if line and not line.startswith("#")]
    if not items:
        raise EdnError(f"source list {path} names no source", "put one video or keypoint file per line")
    out = []
    for item in items:
        out += _entries(item, os.path.dirname(storage.absolute(path)))
    return out


def _spec_for(path: str) -> SourceSpec:
    if storage.isdir(path):
        return SourceSpec(os.path.basename(os.path.normpath(path.rstrip("/"))), "openpose", path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if path.lower().endswith(".npz"):
        if stem == filenames.KEYPOINTS[:-4]:  # pose mode's keypoints.npz: named after its workdir
            stem = os.path.basename(os.path.dirname(storage.absolute(path))) or stem
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



def stats_in_frame(stats: normalization.PoseStats, tf: render.FrameTransform) -> normalization.PoseStats:
    """Pose statistics mapped through a frame transform (image y/x positions move, lengths scale)."""
    s = np.float32(tf.scale)
    cx = np.float32(0.5 * tf.scale - 0.5 + tf.offset_x)
    cy = np.float32(0.5 * tf.scale - 0.5 + tf.offset_y)
    f = lambda v: np.float32(v)  # noqa: E731
    return normalization.PoseStats(
        ankle_far=f(stats.ankle_far) * s + cy, ankle_close=f(stats.ankle_close) * s + cy,
        height_far=f(stats.height_far) * s, height_close=f(stats.height_close) * s,
        center_x=f(stats.center_x) * s + cx, num_valid=f(stats.num_valid),
        ankle_left=f(stats.ankle_left) * s + cx, ankle_right=f(stats.ankle_right) * s + cx)



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
    travel_kept: float             # the fraction of the source's horizontal travel kept (transfer.travel="fit")
    moved_in_frame: np.ndarray     # [T] bool: the figure was shifted to stay inside the frame

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
    if storage.isfile(seq.source):  # the video the keypoints came from, if it is still there
        try:
            info = video.probe_video(seq.source)
        except EdnError:
            info = None
        if info is not None and (info.height, info.width) == (seq.height, seq.width):
            return seq, _video_frames(seq.source, len(seq.keypoints)), seq.source
    return seq, None, None


def normalize_to_target(keypoints: np.ndarray, target_stats: normalization.PoseStats,
                        source_stats: normalization.PoseStats | None = None, fit_travel: bool = False,
                        travel_window: int = 1) -> np.ndarray:
    """Global pose normalization ("robust") of model-frame keypoints to the target's statistics
    (``fit_travel``: the horizontal travel fit into the target's, ``normalization.frame_transform``)."""
    if source_stats is None:
        source_stats = normalization.pose_statistics(keypoints)
    return np.asarray(normalization.normalize_sequence(keypoints, source_stats, target_stats, fit_travel=fit_travel,
                                                       travel_window=travel_window), np.float32)


def travel_window(fps: float) -> int:
    """Frames (odd) the travel is averaged over at ``fps``: about ``TRAVEL_SECONDS``."""
    return max(1, int(round(TRAVEL_SECONDS * fps)) // 2 * 2 + 1)


def frame_margin(height: int, width: int) -> float:
    """How close (px) a kept-in-frame figure's points come to the edge: two stick widths and the 2 px a
    joint's dot and its anti-aliasing reach past its point, so no drawn pixel touches the edge."""
    return 2.0 * render.stick_thickness(height, width) + 2.0


def prepare_source(config, spec: SourceSpec, height: int, width: int, target_stats: normalization.PoseStats,
                   target_poses: np.ndarray | None = None) -> PreparedSource:
    """Pass 1: the source's poses, gaps filled, fit into the model's ``height`` x ``width`` frame and
    normalized to the target (``transfer.normalization``: "robust" from the target's statistics,
    "paper" from its training poses ``target_poses``, both in that frame), placed as
    ``transfer.travel`` says, and frames without a person treated as ``transfer.no_person`` says."""
    seq, frames, media = source_poses(config, spec)
    no_person = ~seq.detected
    try:
        filled, held = hold_nearest_pose(seq.keypoints)
    except EdnError as e:
        raise EdnError(f"{spec.label}: {e}")
    tf = render.fit_transform((seq.height, seq.width), (height, width), "pad")
    in_frame = render.transform_keypoints(filled, tf)
    normalize = bool(config.transfer.normalize) and float(target_stats.num_valid) > 0
    fit = config.transfer.travel == "fit"
    kept = 1.0
    # The source's statistics from its own poses, not from copies held over frames without a person.
    if normalize and config.transfer.normalization == "paper":
        if target_poses is None:
            raise ValueError("the paper's normalization needs the target's training poses")
        keypoints = np.asarray(paper_normalization.normalize_sequence_paper(
            in_frame, target_poses, width, stats_frames=~held), np.float32)
    elif normalize:
        src_stats = normalization.pose_statistics(in_frame[~held])
        keypoints = normalize_to_target(in_frame, target_stats, src_stats, fit, travel_window(seq.fps))
        kept = float(normalization.travel_kept(src_stats, target_stats)) if fit else 1.0
    else:
        keypoints = in_frame
    if config.transfer.no_person == "plate":
        keypoints = np.where(held[:, None, None], np.float32(0), keypoints)
    moved = np.zeros(len(keypoints), bool)
    if fit:
        keypoints, moved = (np.asarray(v) for v in normalization.keep_in_frame(
            keypoints, height, width, frame_margin(height, width)))
    return PreparedSource(spec, keypoints.astype(np.float32), in_frame, float(seq.fps), tf, no_person, held, frames,
                          media, normalize, kept, moved)


def frame_count_estimate(config, spec: SourceSpec) -> int:
    """A cheap frame count for the progress bar's total (0 when unknown); corrected once poses are read."""
    limit = config.input.max_frames or None
    try:
        if spec.kind == "synthetic":
            n = config.transfer.synthetic_frames
        elif spec.kind == "video":
            n = video.probe_video(spec.path).num_frames
        elif spec.kind == "keypoints":
            with storage.open(spec.path, "rb") as f, np.load(f) as z:
                n = len(z["keypoints"])
        else:
            n = len(storage.glob(storage.join(spec.path, "*_keypoints.json")))
    except (EdnError, OSError, ValueError, KeyError):
        return 0
    return min(n, limit) if limit else n
