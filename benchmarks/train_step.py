"""Train-step speed and memory for a named config and shape, comparable with a PyTorch pix2pixHD step.

Prints one JSON object: seconds per step (median of --steps after 2 warm-up steps), images/s
(2 frames per pair), peak memory, and model FLOPs utilisation (``mfu``: XLA's FLOP count of the
compiled step over its median time over this backend's measured matmul peak, see
``benchmarks/common.py``). ``benchmarks/torch_reference.py train`` times the same step in
PyTorch eager. Run from the repository root, e.g.:

  .venv/bin/python -m benchmarks.train_step --config configs/cpu.py --batch 4 --height 256 --width 256
  .venv/bin/python -m benchmarks.train_step --config configs/default.py --batch 1 --height 512 --width 1024 \
      --ngf 64 --n_down 4 --n_blocks 9 --ndf 64 --num_d 2
"""

from __future__ import annotations

import json
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu.py", "Config whose model/loss settings to use.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch size (default: the config's).")
_HEIGHT = flags.DEFINE_integer("height", None, "Image height.")
_WIDTH = flags.DEFINE_integer("width", None, "Image width.")
_NGF = flags.DEFINE_integer("ngf", None, "Generator base channels.")
_NDOWN = flags.DEFINE_integer("n_down", None, "Generator downsamplings.")
_NBLOCKS = flags.DEFINE_integer("n_blocks", None, "Generator residual blocks.")
_NDF = flags.DEFINE_integer("ndf", None, "Discriminator base channels.")
_NUMD = flags.DEFINE_integer("num_d", None, "Discriminator scales.")
_PERCEPTUAL = flags.DEFINE_string("perceptual", None, "vgg16 | vgg19 | none.")
_DTYPE = flags.DEFINE_string("dtype", None, "float32 | bfloat16.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")


def main(argv) -> None:
    del argv
    import jax

    from benchmarks import common, measure
    from edn_jax.models import checks

    config = _CONFIG.value
    for flag, (section, field) in [(_BATCH, ("train", "batch_size")), (_HEIGHT, ("train", "height")),
                                   (_WIDTH, ("train", "width")), (_NGF, ("model", "ngf")),
                                   (_NDOWN, ("model", "n_downsampling")), (_NBLOCKS, ("model", "n_blocks")),
                                   (_NDF, ("model", "ndf")), (_NUMD, ("model", "num_d")),
                                   (_PERCEPTUAL, ("loss", "perceptual")), (_DTYPE, ("model", "dtype"))]:
        if flag.value is not None:
            config[section][field] = flag.value
    checks.validate_train_config(config)
    t, m = config.train, config.model
    result = measure.train_step(config, "global", _STEPS.value)
    peak = common.matmul_peak_flops()  # after the step: its buffers are not in the step's peak memory
    device = jax.devices()[0]
    print(json.dumps({
        "benchmark": "train_step", "config": config_flags.get_config_filename(flags.FLAGS["config"]),
        "devices": f"{jax.device_count()} x {device.platform}", "cpu_count": os.cpu_count(),
        "threads": common.thread_count(), "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "shape": {"batch": t.batch_size, "height": t.height, "width": t.width, "ngf": m.ngf,
                  "n_down": m.n_downsampling, "n_blocks": m.n_blocks, "ndf": m.ndf, "num_d": m.num_d,
                  "n_layers_d": m.n_layers_d, "perceptual": config.loss.perceptual, "dtype": m.dtype},
        "g_params": result["g_params"], "d_params": result["d_params"],
        "compile_s": result["compile_s"], "steps_timed": result["steps_timed"],
        **{k: result[k] for k in ("step_s_median", "step_s_min", "images_per_s", "pairs_per_s")},
        **common.efficiency(result["flops_per_step"], result["step_s_median"], peak, "step"),
        **{k: result[k] for k in ("peak_memory_bytes", "peak_memory_mib", "peak_memory_source")},
        "peak_rss_mib": round(common.peak_rss_bytes() / 2 ** 20, 1),
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
