"""Dataset build speed: frames/s for the synthetic subject and for a real video (detection included).

Prints one JSON object. Run from the repository root:

  .venv/bin/python -m benchmarks.build_dataset --video ../shared/data/single_person_cam01.mp4
"""

from __future__ import annotations

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

from absl import app, flags, logging  # noqa: E402

_VIDEO = flags.DEFINE_string("video", "../shared/data/single_person_cam01.mp4", "Real video to build from.")
_SYNTH_FRAMES = flags.DEFINE_integer("synthetic_frames", 300, "Frames of the synthetic subject.")
_SIZE = flags.DEFINE_integer("size", 256, "Working resolution (square).")


def _timed_build(builder) -> float:
    t0 = time.perf_counter()
    builder.download_and_prepare()
    return time.perf_counter() - t0


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.ERROR)
    from data_builders.edn_pose_frames import edn_pose_frames_dataset_builder as real
    from data_builders.edn_synthetic import edn_synthetic_dataset_builder as synth
    from edn_jax.data import dataset
    from edn_jax.runtime import video

    size = _SIZE.value
    results = {"benchmark": "build_dataset", "size": [size, size], "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as data_dir:
        cfg = dataset.PoseFramesConfig(name="bench_synth", height=size, width=size,
                                       synthetic_frames=_SYNTH_FRAMES.value)
        seconds = _timed_build(synth.Builder(data_dir=data_dir, config=cfg))
        results["synthetic"] = {"frames": _SYNTH_FRAMES.value, "seconds": round(seconds, 2),
                                "frames_per_s": round(_SYNTH_FRAMES.value / seconds, 1)}
        info = video.probe_video(_VIDEO.value)
        cfg = dataset.PoseFramesConfig(name="bench_real", height=size, width=size, videos=(_VIDEO.value,))
        seconds = _timed_build(real.Builder(data_dir=data_dir, config=cfg))
        results["real_video"] = {"video": _VIDEO.value, "source_hw": [info.height, info.width],
                                 "frames": info.num_frames, "seconds": round(seconds, 2),
                                 "frames_per_s": round(info.num_frames / seconds, 1)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
