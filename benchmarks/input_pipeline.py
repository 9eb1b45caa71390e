"""Training input speed: numpy host batches alone, then the sharded iterator over all local devices.

The generator step must never wait for data, so this measures batches/s and images/s
(each pair row holds two frames), seconds per batch and per image, and peak memory for one
process. ``mfu`` is null: the pipeline runs no XLA model (host threads load records, fit the
frames and draw stick figures with numpy/cv2), so there is no model FLOP count to divide.
Prints one JSON object. Run from the repository root:

  .venv/bin/python -m benchmarks.input_pipeline --batch_size 8 --height 256 --width 256
  .venv/bin/python -m benchmarks.input_pipeline --data_dir ~/tensorflow_datasets --dataset NAME
"""

from __future__ import annotations

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch size (pairs).")
_HEIGHT = flags.DEFINE_integer("height", 256, "Output height.")
_WIDTH = flags.DEFINE_integer("width", 256, "Output width.")
_STEPS = flags.DEFINE_integer("steps", 50, "Batches to time (after one warm-up batch).")
_THREADS = flags.DEFINE_integer("num_threads", 0, "Record-loading threads; 0: the pipeline's default.")
_PREFETCH = flags.DEFINE_integer("prefetch", 2, "Host batches built ahead.")
_STORED_HEIGHT = flags.DEFINE_integer("stored_height", 0, "Synthetic frame height; 0: the output height.")
_STORED_WIDTH = flags.DEFINE_integer("stored_width", 0, "Synthetic frame width; 0: the output width.")
_FRAMES = flags.DEFINE_integer("frames", 60, "Frames in each of the two synthetic videos.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir; with --dataset, read its train split.")
_DATASET = flags.DEFINE_string("dataset", None, "TFDS dataset name (with --data_dir).")


def synthetic_source(num_frames: int, height: int, width: int) -> list[dict]:
    from edn_jax.pose import render
    from edn_jax.synthetic import synthetic_clip

    records = []
    for video_id in range(2):
        clip = synthetic_clip(seed=video_id, num_frames=num_frames, height=height, width=width)
        boxes, valid = render.face_boxes(clip.keypoints, height, width)
        records += [{"frame": f, "keypoints": k, "frame_index": t, "video_id": video_id, "face_box": b,
                     "face_valid": v} for t, (f, k, b, v) in enumerate(zip(clip.frames, clip.keypoints, boxes, valid))]
    return records


def timed(iterator, steps: int, block) -> float:
    """Seconds for ``steps`` batches after a warm-up one (thread start, first fills)."""
    with iterator:
        block(next(iterator)[1])
        t0 = time.perf_counter()
        for _ in range(steps):
            block(next(iterator)[1])
        return time.perf_counter() - t0


def main(argv) -> None:
    del argv
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from benchmarks import common as bench
    from edn_jax.data import input_pipeline, pair_schedule

    video_ids = frame_indices = None
    if _DATASET.value:
        import tensorflow_datasets as tfds
        source = tfds.data_source(_DATASET.value, data_dir=_DATA_DIR.value, split="train")
        name = _DATASET.value
        meta = source.dataset_info.metadata or {}
        if "train_video_id" in meta and "train_frame_index" in meta:  # written by edn_jax's dataset builder
            video_ids, frame_indices = meta["train_video_id"], meta["train_frame_index"]
    else:
        stored = (_STORED_HEIGHT.value or _HEIGHT.value, _STORED_WIDTH.value or _WIDTH.value)
        source = synthetic_source(_FRAMES.value, *stored)
        name = f"synthetic {stored[0]}x{stored[1]}"
    t0 = time.perf_counter()
    index = pair_schedule.PairIndex.from_source(source, video_ids, frame_indices)
    index_s = time.perf_counter() - t0

    b, steps = _BATCH.value, _STEPS.value
    options = input_pipeline.PipelineOptions(b, _HEIGHT.value, _WIDTH.value, seed=0, prefetch=_PREFETCH.value,
                                             num_threads=_THREADS.value or None)
    host_s = timed(input_pipeline.host_batches(source, options, pair_index=index), steps, lambda batch: None)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded_s = timed(input_pipeline.make_train_iterator(source, options, mesh, pair_index=index), steps,
                      jax.block_until_ready)

    def rates(seconds: float) -> dict:
        return {"batches_per_s": round(steps / seconds, 2), "images_per_s": round(2 * b * steps / seconds, 1),
                "seconds_per_batch": round(seconds / steps, 5),
                "seconds_per_image": round(seconds / (2 * b * steps), 6)}

    print(json.dumps({
        "benchmark": "input_pipeline", "source": name, "records": len(source), "pairs": len(index),
        "global_batch_size": b, "output_hw": [_HEIGHT.value, _WIDTH.value], "steps": steps,
        "images_per_batch": 2 * b, "num_threads": _THREADS.value or min(16, os.cpu_count() or 1),
        "prefetch": _PREFETCH.value, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "pair_index_from": "records" if video_ids is None else "metadata", "pair_index_s": round(index_s, 3),
        "host_batches": rates(host_s), "sharded_iterator": rates(sharded_s),
        "mfu": None,
        "mfu_note": "no XLA model runs here (host threads load records, fit frames and draw stick figures with "
                    "numpy/cv2, then device_put), so there is no model FLOP count; the figure of merit is "
                    "images_per_s against the train step's images_per_s (benchmarks/train_step.py)",
        **bench.peak_memory(),
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
