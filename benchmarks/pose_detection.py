"""Pose extraction speed on a real video, end to end as pose mode runs it, against the old path.

The timed path is ``pipeline.detect_video_keypoints`` with the default ``config.pose`` (or the
flags' overrides): decoding in a background thread, frames shrunk to ``pose.detect_height``,
``pose.detect_threads`` MediaPipe graphs on successive frames, the subject tracker, keypoints
back in source pixels. The baseline is the path pose mode took before those settings existed:
decode, then detect and track with one MediaPipe graph at full resolution, strictly in turn.
Both are timed ``--repeats`` times, interleaved, after the graphs are built and warmed up
(``setup_seconds``); ``frames_per_s`` is the median run over all frames, including opening the
video and the first frame's whole-frame search (three detections in turn); the rate after the
first 10 frames is printed per run as well. The machine may be shared, so the load
average, this process's CPU seconds per frame and the cores other processes used during each run
(``runs_other_processes_cores``, from /proc/stat) are printed too.

``compare`` runs both paths over whole videos and reports, per part (body 25, face 70, hands
42 points), the frames where each path found the part and the median / 95th-percentile
distance in source pixels between the two paths' points where both found them. For scale,
``noise_floor`` compares the old path with itself on crops 1 % different (tracker window margin
0.5 -> 0.495 of the subject's size): MediaPipe's answer moves that much whenever its input
image changes at all.

Prints one JSON object. Run from the repository root:

  .venv/bin/python -m benchmarks.pose_detection --video ../shared/data/single_person_cam01.mp4
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

from absl import app, flags  # noqa: E402

_DATA = "../shared/data"
_VIDEO = flags.DEFINE_string("video", f"{_DATA}/single_person_cam01.mp4", "Video to time.")
_FRAMES = flags.DEFINE_integer("frames", 100, "Frames to time (0: all).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs of each path.")
_SUBJECT = flags.DEFINE_string("subject", "largest", "Tracker subject policy.")
_HEIGHT = flags.DEFINE_integer("detect_height", None, "Override pose.detect_height (default: configs/default.py).")
_THREADS = flags.DEFINE_integer("detect_threads", None, "Override pose.detect_threads (default: configs/default.py).")
_COMPARE = flags.DEFINE_list(
    "compare", [f"{_DATA}/single_person_cam01.mp4", f"{_DATA}/single_person_cam02.mp4", f"{_DATA}/two_people_cam01.mp4"],
    "Videos (all frames) to compare the two paths' detections on; empty to skip.")
_NOISE = flags.DEFINE_bool("noise_floor", True, "Also compare the old path with itself on 1 % different crops.")

PARTS = {"body": (0, 25), "face": (25, 95), "hands": (95, 137)}
_SKIP = 10  # frames left out of the steady rate: opening the video and the first frame's whole-frame search


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes on the machine have run (Linux /proc/stat), to tell how much of
    it other processes took while a path was timed."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def part_agreement(old, new) -> dict:
    """Per part: frames found by each path and point distances (source pixels) where both found it."""
    import numpy as np

    from edn_jax.pose import layout

    out = {"frames": len(old),
           "frames_with_subject_old": int((old[:, layout.BODY, 2] > 0).any(1).sum()),
           "frames_with_subject_new": int((new[:, layout.BODY, 2] > 0).any(1).sum())}
    for name, (a, b) in PARTS.items():
        found_old, found_new = (old[:, a:b, 2] > 0).any(1), (new[:, a:b, 2] > 0).any(1)
        both = (old[:, a:b, 2] > 0) & (new[:, a:b, 2] > 0)
        dist = np.linalg.norm(old[:, a:b, :2] - new[:, a:b, :2], axis=-1)[both]
        entry = {"points": b - a, "frames_found_old": int(found_old.sum()), "frames_found_new": int(found_new.sum()),
                 "frames_found_both": int((found_old & found_new).sum()),
                 "median_px": None if not dist.size else round(float(np.median(dist)), 2),
                 "p95_px": None if not dist.size else round(float(np.percentile(dist, 95)), 2)}
        if name == "hands":
            for hand, sl in (("left", layout.LEFT_HAND), ("right", layout.RIGHT_HAND)):
                entry[f"{hand}_found_old"] = int((old[:, sl, 2] > 0).any(1).sum())
                entry[f"{hand}_found_new"] = int((new[:, sl, 2] > 0).any(1).sum())
        out[name] = entry
    return out


def main(argv) -> None:
    del argv
    from benchmarks import common
    from configs import default
    from edn_jax.runtime import video
    from edn_jax.pose import detector, pipeline, video_tracker

    pose_cfg = default.get_config().pose
    pose_cfg.subject = _SUBJECT.value
    if _HEIGHT.value is not None:
        pose_cfg.detect_height = _HEIGHT.value
    if _THREADS.value is not None:
        pose_cfg.detect_threads = _THREADS.value
    tracker_cfg = pipeline.tracker_config(pose_cfg)
    info = video.probe_video(_VIDEO.value)
    frames = _FRAMES.value or None
    load_before = [round(v, 2) for v in os.getloadavg()]

    t0 = time.perf_counter()
    with pipeline.open_detectors(pose_cfg) as detectors, \
            detector.MediaPipeHolisticDetector(pose_cfg.min_detection_confidence,
                                               min_visibility=pose_cfg.min_visibility) as old_det:
        first = next(video.iter_frames(_VIDEO.value, 1))
        for det in [*detectors, old_det]:
            det.detect(first)  # graph and model initialisation
        setup_s = time.perf_counter() - t0

        stamps = []  # when each frame of the current timed run was finished

        def stamp(n, kps):
            stamps.append(time.perf_counter())

        def old_path(path, limit, cfg=tracker_cfg):
            return video_tracker.track_video(old_det, video.iter_frames(path, limit), cfg, on_frame=stamp)

        infos = {}

        def new_path(path, limit):  # pose mode probes the video before this, and passes the info on
            info = infos.setdefault(path, video.probe_video(path))
            return pipeline.detect_video_keypoints(detectors, path, pose_cfg, limit or 0, on_frame=stamp, info=info)

        runs = {"old": [], "new": []}
        results = {}
        for _ in range(_REPEATS.value):
            for name, run in (("old", old_path), ("new", new_path)):
                stamps.clear()
                wall, cpu, busy = time.perf_counter(), time.process_time(), _busy_cpu_seconds()
                results[name] = run(_VIDEO.value, frames)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                others = None if busy is None else max(_busy_cpu_seconds() - busy - cpu, 0.0) / wall
                steady = (len(stamps) - _SKIP) / (stamps[-1] - stamps[_SKIP - 1]) if len(stamps) > _SKIP + 1 else None
                runs[name].append((wall, cpu, others, steady))
        n = len(results["new"][0])
        peak_rss = common.peak_rss_bytes()
        load_timed = [round(v, 2) for v in os.getloadavg()]

        compare = {}
        for path in _COMPARE.value:
            if os.path.abspath(path) == os.path.abspath(_VIDEO.value) and (frames or 1e9) >= info.num_frames:
                old, new = results["old"][0], results["new"][0]
            else:
                old, new = old_path(path, None)[0], new_path(path, None)[0]
            compare[os.path.basename(path)] = entry = {"new_vs_old": part_agreement(old, new)}
            if _NOISE.value:
                margin = round(tracker_cfg.window_margin * 0.99, 4)
                nudged = old_path(path, None, dataclasses.replace(tracker_cfg, window_margin=margin))[0]
                entry[f"noise_floor_old_vs_old_with_window_margin_{margin}"] = part_agreement(old, nudged)

    t0 = time.perf_counter()
    decoded = sum(1 for _ in video.iter_frames(_VIDEO.value, frames))
    decode_s = time.perf_counter() - t0

    def summary(name):
        walls, cpus, others, steady = zip(*runs[name])
        median = statistics.median(walls)
        return {"seconds": round(median, 3), "frames_per_s": round(n / median, 1),
                "runs_frames_per_s": [round(n / w, 1) for w in walls],
                f"runs_frames_per_s_after_frame_{_SKIP}": [None if v is None else round(v, 1) for v in steady],
                "cpu_seconds_per_frame": round(statistics.median(cpus) / n, 4),
                "runs_other_processes_cores": None if None in others else [round(o, 2) for o in others]}

    new, old = summary("new"), summary("old")
    kps, stats = results["new"]
    print(json.dumps({
        "benchmark": "pose_detection", "video": _VIDEO.value, "frame_size_hw": [info.height, info.width],
        "frames": n, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average_1_5_15_min": {"before": load_before, "after_timing": load_timed,
                                    "end": [round(v, 2) for v in os.getloadavg()]},
        "path": {"detect_height": pose_cfg.detect_height, "detect_threads": pose_cfg.detect_threads,
                 "subject": pose_cfg.subject, "decode": "background thread (video.prefetch)"},
        **new,
        "setup_seconds": round(setup_s, 2),
        "baseline": {"path": "decode, then one MediaPipe graph at full resolution, frame by frame", **old},
        "speedup": round(new["frames_per_s"] / old["frames_per_s"], 2),
        "frames_with_subject": int((kps[:, :25, 2] > 0).any(1).sum()),
        "tracker_stats": {k: v for k, v in stats.__dict__.items() if k != "status"},
        "frame_status": stats.status_counts(),
        "decode_frames_per_s": round(decoded / decode_s, 1),
        "peak_rss_mib": round(peak_rss / 2 ** 20, 1),
        "mfu": None,
        "mfu_note": "MFU is not defined here: MediaPipe runs its TFLite models with XNNPACK kernels outside "
                    "XLA, so there is no XLA FLOP count to divide by a peak",
        "compare": compare,
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
