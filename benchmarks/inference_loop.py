"""Sequential rendering speed: the compiled lax.scan over a chunk vs a Python loop of jitted one-frame steps.

Both render the same frames with the same model (a config's main + face generators, random
params) from synthetic stick figures, each frame from the previous output. Prints one JSON
object with seconds per frame and frames/s of each (median of --repeats runs), the compile times,
peak memory and model FLOPs utilisation (``mfu``: XLA's FLOP count of one frame's compiled
render over the median seconds per frame over this backend's measured matmul peak, see
``benchmarks/common.py``). ``benchmarks/torch_reference.py infer`` times the same loop in
PyTorch eager (compare with ``--noface`` unless it is given ``--face``). Run from the repository root:

  .venv/bin/python -m benchmarks.inference_loop                          # configs/cpu.py at 256x256
  .venv/bin/python -m benchmarks.inference_loop --height 512 --width 1024 --config configs/default.py
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu.py", "Config whose model sizes to use.")
_HEIGHT = flags.DEFINE_integer("height", 256, "Frame height.")
_WIDTH = flags.DEFINE_integer("width", 256, "Frame width.")
_FRAMES = flags.DEFINE_integer("frames", 64, "Timed frames per method (after a warm-up call).")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Frames per scan call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per method; the median is reported.")
_FACE = flags.DEFINE_bool("face", True, "Include the face generator (as a model with a face stage).")


def main(argv) -> None:
    del argv
    import jax
    import numpy as np

    from benchmarks import common, measure
    from edn_jax.models import inference
    from edn_jax.models import param_count

    config = _CONFIG.value
    h, w, n, chunk = _HEIGHT.value, _WIDTH.value, _FRAMES.value, _CHUNK.value
    if n % chunk:
        raise app.UsageError(f"--frames={n} must be a multiple of --chunk={chunk}")
    renderer, params = measure.renderer_and_params(config, "global", h, w, _FACE.value)
    labels, boxes, valid = measure.stick_figures(n, h, w)
    exemplars = measure.exemplars_for(renderer, labels)

    scan_all = functools.partial(measure.render_frames, renderer, params, labels, boxes, valid, chunk, exemplars)
    per_frame_all = functools.partial(measure.render_frames, renderer, params, labels, boxes, valid, 1, exemplars)

    results, seconds_per_frame = {}, {}
    for name, fn, first_len in (("scan", scan_all, chunk), ("per_frame", per_frame_all, 1)):
        t0 = time.perf_counter()
        jax.block_until_ready(inference.render_chunk(renderer, params, labels[:first_len], boxes[:first_len],
                                                     valid[:first_len], inference.initial_carry(h, w),
                                                     exemplars=measure.exemplar_frames(exemplars, 0, first_len)))
        compile_s = time.perf_counter() - t0
        fn()  # warm
        times = common.call_seconds(fn, _REPEATS.value)
        seconds = float(np.median(times))
        seconds_per_frame[name] = seconds / n
        results[name] = {"frames_per_s": round(n / seconds, 3), "seconds_median": round(seconds, 3),
                         "seconds_per_frame": round(seconds / n, 5), "frames_per_s_best": round(n / min(times), 3),
                         "first_call_s_incl_compile": round(compile_s, 2)}
    memory = common.peak_memory()  # before the matmul peak's buffers below
    # One frame's FLOPs: a one-frame chunk (XLA's cost analysis counts a scan body once, whatever its length).
    flops = common.compiled_flops(inference.render_chunk, renderer, params, labels[:1], boxes[:1], valid[:1],
                                  inference.initial_carry(h, w), exemplars=measure.exemplar_frames(exemplars, 0, 1))
    peak = common.matmul_peak_flops()
    for name in results:
        results[name]["mfu"] = common.efficiency(flops, seconds_per_frame[name], peak, "frame")["mfu"]
    m = config.model
    print(json.dumps({
        "benchmark": "inference_loop", "config": config_flags.get_config_filename(flags.FLAGS["config"]),
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}", "cpu_count": os.cpu_count(),
        "threads": common.thread_count(), "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "shape": {"height": h, "width": w, "frames": n, "chunk": chunk, "ngf": m.ngf, "n_down": m.n_downsampling,
                  "n_blocks": m.n_blocks, "face": _FACE.value, "face_ngf": m.face_ngf,
                  "face_crop": renderer.face_crop, "dtype": m.dtype},
        "g_params": param_count(params["g"]), "face_params": param_count(params["face"]) if params["face"] else 0,
        "scan": results["scan"], "per_frame": results["per_frame"],
        "scan_speedup": round(results["scan"]["frames_per_s"] / results["per_frame"]["frames_per_s"], 2),
        **{k: v for k, v in common.efficiency(flops, seconds_per_frame["scan"], peak, "frame").items()
           if k not in ("mfu", "achieved_gflops_per_s")},  # mfu is per method, above
        **memory,
        "peak_rss_mib": round(common.peak_rss_bytes() / 2 ** 20, 1),
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
