"""Pose extraction speed on a real video: decode alone, detector alone, and the full tracker.

Prints one JSON object. Run from the repository root:

  .venv/bin/python -m benchmarks.pose_detection --video ../shared/data/single_person_cam01.mp4
"""

from __future__ import annotations

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

from absl import app, flags  # noqa: E402

_VIDEO = flags.DEFINE_string("video", "../shared/data/single_person_cam01.mp4", "Video to run on.")
_FRAMES = flags.DEFINE_integer("frames", 100, "Frames to time (after one warm-up frame).")
_SUBJECT = flags.DEFINE_string("subject", "largest", "Tracker subject policy.")


def main(argv) -> None:
    del argv
    import resource

    from edn_jax import video
    from edn_jax.pose import detector, layout, tracking

    info = video.probe_video(_VIDEO.value)
    t0 = time.perf_counter()
    frames = list(video.iter_frames(_VIDEO.value, _FRAMES.value))
    decode_s = time.perf_counter() - t0

    with detector.MediaPipeHolisticDetector() as det:
        det.detect(frames[0])  # warm-up: graph and model initialisation
        t0 = time.perf_counter()
        found = sum(det.detect(f) is not None for f in frames)
        detect_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        kps, stats = tracking.track_video(det, frames, tracking.TrackerConfig(subject=_SUBJECT.value))
        track_s = time.perf_counter() - t0

    n = len(frames)
    print(json.dumps({
        "benchmark": "pose_detection", "video": _VIDEO.value, "frame_size_hw": [info.height, info.width],
        "frames": n, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "decode_frames_per_s": round(n / decode_s, 1),
        "detector_full_frame_frames_per_s": round(n / detect_s, 1),
        "detector_full_frame_found": found,
        "tracker_frames_per_s": round(n / track_s, 1),
        "tracker_frames_with_subject": int((kps[:, layout.BODY, 2] > 0).any(1).sum()),
        "tracker_stats": stats.__dict__,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
