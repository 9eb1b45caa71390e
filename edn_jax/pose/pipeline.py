"""The pose stage end to end: a source (video, OpenPose JSON or the synthetic
subject) -> tracked subject keypoints -> temporal cleanup -> files a person and
the later stages use (keypoints .npz, OpenPose JSON, stick-figure and overlay
videos).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator

import numpy as np

from edn_jax import filenames, synthetic
from edn_jax.errors import EdnError
from edn_jax.pose import cleanup, layout, openpose_json, render, tracking, video_tracker
from edn_jax.pose.detector import MediaPipeHolisticDetector
from edn_jax.runtime import fileio, progress, storage, video

LAYOUT_NAME = "openpose_body25_face70_hands21"
MIN_DETECT_HEIGHT = 256  # MediaPipe's pose model sees 256x256; smaller frames starve the face and hand crops
MAX_DETECT_THREADS = 16


@dataclasses.dataclass(frozen=True)
class PoseSequence:
    """One subject's keypoints through a clip, in pixels of its frames."""

    keypoints: np.ndarray      # [T, 137, 3] after cleanup
    raw_keypoints: np.ndarray  # [T, 137, 3] as detected (missing frames all zero)
    fps: float
    height: int
    width: int
    source: str                # the video path, JSON dir, or "synthetic:<seed>"
    tracker_status: tuple[str, ...] = ()  # per frame, the tracker's tracking.STATUSES (empty: unknown)
    tracker_reasons: tuple[str, ...] = ()  # per frame, why the tracker has no subject ("" where tracked; empty: unknown)

    @property
    def detected(self) -> np.ndarray:
        """[T] bool: a body was detected on the frame (before gap filling)."""
        return self.raw_keypoints[:, layout.BODY, 2].max(axis=1) > 0

    @property
    def status(self) -> np.ndarray:
        """[T] str per frame: tracked, filled (by the gap filler), not_detected or other_person (the
        tracker found only other people). Without the tracker's record, a missing frame is not_detected."""
        found = self.detected
        filled = ~found & (self.keypoints[:, layout.BODY, 2].max(axis=1) > 0)
        return np.where(found, "tracked", np.where(filled, "filled", self.missing_reason))

    @property
    def missing_reason(self) -> np.ndarray:
        """[T] str: why the tracker has no subject on the frame (not_detected or other_person), also
        where the gap filler filled it in; "" where it was tracked."""
        why = self.tracker_status if self.tracker_status else ["not_detected"] * len(self.detected)
        return np.where(self.detected, "", np.array(why, dtype="<U12"))


def tracker_config(pose_cfg) -> tracking.TrackerConfig:
    return tracking.TrackerConfig.from_config(pose_cfg)


def clean_keypoints(raw: np.ndarray, fps: float, pose_cfg) -> np.ndarray:
    smoother_params = {
        "none": {},
        "median": {"window": pose_cfg.median_window},
        "one_euro": {"min_cutoff": pose_cfg.one_euro_min_cutoff, "beta": pose_cfg.one_euro_beta},
        "savgol": {"window": pose_cfg.savgol_window, "order": pose_cfg.savgol_order},
    }.get(pose_cfg.smoothing, {})
    return cleanup.clean_sequence(raw, fps=fps, max_gap=pose_cfg.max_gap, smoothing=pose_cfg.smoothing,
                                  fill_confidence=pose_cfg.fill_confidence, **smoother_params)


def validate_pose_config(config) -> None:
    """Checks every pose-stage value up front, before any slow work starts."""
    tracker_config(config.pose).validate()
    clean_keypoints(np.zeros((1, layout.NUM_KEYPOINTS, 3), np.float32), 30.0, config.pose)
    if config.input.video and config.input.openpose_dir:
        raise EdnError("both input.video and input.openpose_dir are set", "give one source of poses")
    if config.input.max_frames < 0:
        raise EdnError(f"input.max_frames={config.input.max_frames} is negative", "use 0 for all frames")
    if config.pose.output_height < 0 or config.pose.output_height % 2:
        raise EdnError(f"pose.output_height={config.pose.output_height} must be even and >= 0",
                       "use e.g. 512, or 0 for the source height")
    validate_detect_settings(config.pose)


def validate_detect_settings(pose_cfg) -> None:
    height, threads = pose_cfg.detect_height, pose_cfg.detect_threads
    if isinstance(height, bool) or not isinstance(height, int) or (height != 0 and height < MIN_DETECT_HEIGHT):
        raise EdnError(f"pose.detect_height={height!r} is not 0 or an integer >= {MIN_DETECT_HEIGHT}",
                       "use 0 (detect at full resolution) or a height in pixels, e.g. 960 for 1920-row video")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_DETECT_THREADS:
        raise EdnError(f"pose.detect_threads={threads!r} is not an integer in [1, {MAX_DETECT_THREADS}]",
                       "use the number of CPU cores, e.g. 2 (1 detects strictly frame by frame)")


@contextlib.contextmanager
def open_detectors(pose_cfg) -> Iterator[list]:
    """``pose_cfg.detect_threads`` identical MediaPipe Holistic detectors, closed on exit."""
    validate_detect_settings(pose_cfg)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(MediaPipeHolisticDetector(pose_cfg.min_detection_confidence,
                                                             min_visibility=pose_cfg.min_visibility))
               for _ in range(pose_cfg.detect_threads)]


def detect_video_keypoints(detectors: list, path: str, pose_cfg, max_frames: int = 0, on_frame=None,
                           info: video.VideoInfo | None = None) -> tuple[np.ndarray, tracking.TrackStats]:
    """The tracked subject's raw keypoints [T, 137, 3] in pixels of the source frames.

    Frames decode in a background thread, shrunk to ``pose_cfg.detect_height`` rows if set; the
    tracker runs on those frames with ``detectors`` (see ``video_tracker.track_video``) and the
    keypoints are scaled back to the source resolution. ``info``: the video's ``probe_video``,
    if the caller has it already.
    """
    validate_detect_settings(pose_cfg)
    info = info or video.probe_video(path)
    height, width = video.scaled_size(info.height, info.width, pose_cfg.detect_height)
    frames = video.prefetch(video.iter_frames(path, max_frames or None, pose_cfg.detect_height))
    with contextlib.closing(frames):
        raw, stats = video_tracker.track_video(detectors, frames, tracker_config(pose_cfg), on_frame=on_frame)
    if (height, width) != (info.height, info.width):
        # MediaPipe's coordinates are fractions of the image it saw, so a plain scale maps them back.
        raw[..., 0] *= info.width / width
        raw[..., 1] *= info.height / height
    return raw, stats


def _detect_video(config) -> PoseSequence:
    path = config.input.video
    info = video.probe_video(path)
    limit = config.input.max_frames or None
    total = min(info.num_frames, limit) if limit else info.num_frames
    with open_detectors(config.pose) as detectors, \
            progress.Progress(total, f"detecting poses in {os.path.basename(path)}") as bar:
        raw, stats = detect_video_keypoints(detectors, path, config.pose, config.input.max_frames,
                                            on_frame=lambda n, kps: bar.update(), info=info)
    if stats.tracked == 0:
        raise EdnError(f"no person detected in any of the {stats.frames} frames of {path}",
                       "use a video where a person is visible (whole body, not too small)")
    return PoseSequence(raw, raw, info.fps, info.height, info.width, path, tuple(stats.status),
                        tuple(stats.reasons))


def _read_openpose(config) -> PoseSequence:
    height, width = config.input.openpose_size
    if height <= 0 or width <= 0:
        raise EdnError("input.openpose_size is not set", "give the (height, width) of the frames the JSON describes")
    people = openpose_json.read_sequence_people(storage.local_file(config.input.openpose_dir))
    if config.input.max_frames:
        people = people[:config.input.max_frames]
    stats = tracking.TrackStats()
    chosen = tracking.track_candidates(people, height, width, tracker_config(config.pose), stats)
    raw = np.stack([layout.empty_pose() if p is None else p for p in chosen])
    return PoseSequence(raw, raw, 30.0, height, width, config.input.openpose_dir, tuple(stats.status),
                        tuple(stats.reasons))


def _synthetic(config) -> PoseSequence:
    s = config.synthetic
    raw = synthetic.synthetic_keypoints(s.seed, s.num_frames, s.height, s.width, s.fps)
    if config.input.max_frames:
        raw = raw[:config.input.max_frames]
    return PoseSequence(raw, raw, s.fps, s.height, s.width, f"synthetic:{s.seed}")


def extract_poses(config) -> PoseSequence:
    """The configured source's subject keypoints, tracked and cleaned."""
    validate_pose_config(config)
    if config.input.video:
        seq = _detect_video(config)
    elif config.input.openpose_dir:
        seq = _read_openpose(config)
    else:
        return _synthetic(config)  # exact keypoints: nothing to fill or smooth
    return dataclasses.replace(seq, keypoints=clean_keypoints(seq.raw_keypoints, seq.fps, config.pose))


def source_frames(seq: PoseSequence, config) -> Iterator[np.ndarray] | None:
    """The source's RGB frames again (streamed), or None for JSON input."""
    if seq.source.startswith("synthetic:"):
        s = config.synthetic
        return (synthetic.render_synthetic_frame(k, s.height, s.width, s.appearance) for k in seq.raw_keypoints)
    if config.input.video:
        return video.iter_frames(config.input.video, len(seq.keypoints))
    return None


def save_keypoints(path: str, seq: PoseSequence) -> None:
    """Atomically writes the sequence with the metadata needed to use it alone."""
    face_boxes, face_valid = render.face_boxes(seq.keypoints, seq.height, seq.width)
    with video.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, keypoints=seq.keypoints, raw_keypoints=seq.raw_keypoints, fps=np.float32(seq.fps),
                height=np.int32(seq.height), width=np.int32(seq.width), source=np.str_(seq.source),
                layout=np.str_(LAYOUT_NAME), face_boxes=face_boxes, face_valid=face_valid, frame_status=seq.status,
                missing_reason=seq.missing_reason, frame_reasons=np.array(seq.tracker_reasons, dtype=np.str_))


def load_keypoints(path: str) -> PoseSequence:
    if not storage.exists(path):
        raise EdnError(f"keypoint file not found: {path}", "run pose mode first or fix the path")
    try:
        with storage.open(path, "rb") as f, np.load(f) as z:
            if str(z["layout"]) != LAYOUT_NAME:
                raise EdnError(f"{path} uses keypoint layout {z['layout']}", f"re-run pose mode ({LAYOUT_NAME})")
            status = tuple(str(v) or "tracked" for v in z["missing_reason"]) if "missing_reason" in z.files else ()
            reasons = tuple(str(v) for v in z["frame_reasons"]) if "frame_reasons" in z.files else ()
            return PoseSequence(z["keypoints"], z["raw_keypoints"], float(z["fps"]), int(z["height"]),
                                int(z["width"]), str(z["source"]), status, reasons)
    except (OSError, ValueError, KeyError) as e:
        raise EdnError(f"{path} is not a readable edn_jax keypoint file ({e})", "re-run pose mode to recreate it")


def status_runs(status: np.ndarray, reason: np.ndarray) -> list[dict]:
    """Runs of frames the tracker has no subject on, as [{"first", "last", "status", "reason"}]."""
    runs = []
    for t, (s, why) in enumerate(zip(status, reason)):
        if s == "tracked":
            continue
        last = runs[-1] if runs else None
        if last and (last["status"], last["reason"], last["last"]) == (s, why, t - 1):
            last["last"] = t
        else:
            runs.append({"first": t, "last": t, "status": str(s), "reason": str(why)})
    return runs


def frame_reasons(status: np.ndarray, reasons: tuple[str, ...]) -> list[dict]:
    """Every frame that is not tracked, with the tracker's reason: [{"frame", "status", "reason"}]
    (a filled frame's reason is why the tracker had nobody there). Empty without the tracker's record."""
    if not reasons:
        return []
    return [{"frame": t, "status": str(s), "reason": reasons[t]} for t, s in enumerate(status) if s != "tracked"]


def _output_size(seq: PoseSequence, output_height: int) -> tuple[int, int]:
    if not output_height:
        return seq.height - seq.height % 2, seq.width - seq.width % 2
    width = int(round(seq.width * output_height / seq.height))
    return output_height, width + width % 2


POSE_OUTPUTS = {"keypoints": (filenames.KEYPOINTS, "file"), "openpose_json": (filenames.OPENPOSE_JSON, "dir"),
                "stick_video": (filenames.STICK_VIDEO, "file"), "overlay_video": (filenames.OVERLAY_VIDEO, "file"),
                "summary": (filenames.POSE_SUMMARY, "file")}


def run_pose_mode(config, workdir: str) -> dict[str, str]:
    """Pose mode: writes keypoints, JSON, stick-figure and overlay videos into ``workdir``, all of
    them at once when complete (``fileio.StagedOutputs``): an interrupted run leaves none of them."""
    wanted = {k: v for k, v in POSE_OUTPUTS.items() if k != "openpose_json" or config.pose.write_json}
    staged = fileio.StagedOutputs(workdir, "pose_outputs", wanted, config.overwrite)
    staged.recover()
    staged.check("pose mode")
    seq = extract_poses(config)
    staged.start()
    try:
        outputs = _write_pose_outputs(config, seq, staged)
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return outputs


def _write_pose_outputs(config, seq: PoseSequence, staged: fileio.StagedOutputs) -> dict[str, str]:
    outputs = {key: staged.final(key) for key in staged.outputs}
    detected = seq.detected
    save_keypoints(staged.path("keypoints"), seq)
    if config.pose.write_json:
        openpose_json.write_sequence(staged.path("openpose_json"), seq.keypoints)

    height, width = _output_size(seq, config.pose.output_height)
    tf = render.fit_transform((seq.height, seq.width), (height, width), mode="pad")
    kps_out = render.transform_keypoints(seq.keypoints, tf)
    threshold = config.pose.render_conf_threshold
    with progress.Progress(len(kps_out), "rendering stick figures") as bar, \
            video.VideoWriter(staged.path("stick_video"), seq.fps) as writer:
        for k in kps_out:
            writer.write(render.render_stick_figure(k, height, width, conf_threshold=threshold))
            bar.update()
    frames = source_frames(seq, config)
    if frames is None:
        del outputs["overlay_video"]
    else:
        with progress.Progress(len(kps_out), "rendering overlay") as bar, \
                video.VideoWriter(staged.path("overlay_video"), seq.fps) as writer:
            for frame, k in zip(frames, kps_out):
                writer.write(render.draw_overlay(render.transform_image(frame, tf), k, conf_threshold=threshold))
                bar.update()

    status = seq.status
    summary = {"source": seq.source, "frames": int(len(seq.keypoints)), "frames_with_person": int(detected.sum()),
               "frames_filled": int((status == "filled").sum()),
               "frame_status": {s: int((status == s).sum()) for s in tracking.STATUSES},
               "frames_without_subject": status_runs(status, seq.missing_reason),
               "frame_reasons": frame_reasons(status, seq.tracker_reasons),
               "fps": seq.fps, "height": seq.height, "width": seq.width, "outputs": outputs}
    with open(staged.path("summary"), "w") as f:
        json.dump(summary, f, indent=2)
    return outputs
