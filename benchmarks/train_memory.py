"""Train-step memory by remat mode, from XLA's memory analysis of the compiled step (nothing runs).

For each ``train.remat`` mode the global or local stage's jitted step is lowered for abstract
state and batch (``jax.eval_shape``: no parameters are created, so paper sizes fit on a laptop)
and compiled; XLA's ``memory_analysis()`` then gives the bytes of the arguments (state, batch,
VGG weights), the outputs, and the temporaries (the activations kept for the backward pass
live there), plus the compiled FLOP count, i.e. what remat costs in recomputation. Prints one
JSON object. Run from the repository root, e.g. the paper's stages (batch 1 per device):

  .venv/bin/python -m benchmarks.train_memory --config configs/default.py --stage global --batch 1
  .venv/bin/python -m benchmarks.train_memory --config configs/default.py --stage local --batch 1

``--height``/``--width`` set the global stage's size (the local stage runs at twice it).
"""

from __future__ import annotations

import json
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config whose model/loss settings to use.")
_STAGE = flags.DEFINE_enum("stage", "global", ["global", "local"], "Which stage's train step.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch size (default: the config's).")
_HEIGHT = flags.DEFINE_integer("height", None, "The global stage's image height (default: the config's).")
_WIDTH = flags.DEFINE_integer("width", None, "The global stage's image width (default: the config's).")
_MODES = flags.DEFINE_list("modes", ["none", "perceptual", "full"], "train.remat modes to compile.")


def main(argv) -> None:
    del argv
    import jax

    from benchmarks.measure import stage_named, step_memory
    from edn_jax.models import checks

    config = _CONFIG.value
    for flag, field in ((_BATCH, "batch_size"), (_HEIGHT, "height"), (_WIDTH, "width")):
        if flag.value is not None:
            config.train[field] = flag.value
    if _STAGE.value == "local" and "local" not in config.train.stages:
        config.train.stages = "global,local"
    results = {}
    for mode in _MODES.value:
        config.train.remat = mode
        checks.validate_train_config(config)
        results[mode] = step_memory(config, _STAGE.value)
        print(f"remat={mode}: {results[mode]}", flush=True)
    base = results.get("none")
    if base:
        for r in results.values():
            r["temp_vs_none"] = round(r["temp_size_mib"] / base["temp_size_mib"], 3) if base["temp_size_mib"] else None
            r["flops_vs_none"] = (round(r["flops_per_step"] / base["flops_per_step"], 3)
                                  if base["flops_per_step"] and r["flops_per_step"] else None)
    stage = stage_named(config, _STAGE.value)
    m = config.model
    print(json.dumps({
        "benchmark": "train_memory", "config": config_flags.get_config_filename(flags.FLAGS["config"]),
        "stage": _STAGE.value, "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
        "shape": {"batch": config.train.batch_size, "height": stage.height, "width": stage.width, "ngf": m.ngf,
                  "local_ngf": m.local_ngf, "n_down": m.n_downsampling, "n_blocks": m.n_blocks, "ndf": m.ndf,
                  "num_d": m.num_d, "perceptual": config.loss.perceptual, "dtype": m.dtype},
        "source": "XLA compiled.memory_analysis() of the jitted train step (compiled only, not run)",
        "by_remat": results,
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
