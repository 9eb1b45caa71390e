"""Parameter counts of every network a config trains, per stage, from shapes only (``jax.eval_shape``).

  .venv/bin/python -m tools.param_counts --config configs/paper.py

Prints one JSON object; nothing is allocated, so the paper-size models count in seconds on a laptop.
"""

from __future__ import annotations

import json

from absl import app


def count(config) -> dict:
    import jax
    import jax.numpy as jnp

    from edn_jax import stages
    from edn_jax.models import factory, param_count

    def params(module, *shapes):
        return param_count(jax.eval_shape(module.init, jax.random.PRNGKey(0),
                                          *(jnp.zeros(s, jnp.float32) for s in shapes))["params"])

    g_channels = factory.generator_channels(config)
    out = {}
    for stage in stages.plan_stages(config):
        if stage.name == "face":
            side = stages.face_crop_side(config, stage.height, stage.width)
            face_g, face_d = factory.build_face_models(config)
            crop = (1, side, side, 3)
            d = factory.build_discriminator(config, stage.num_d)
            out["face"] = {"crop": side, "face_generator": params(face_g, crop, crop),
                           "face_discriminator": params(face_d, crop, crop),
                           "face_discriminator_norm": config.model.face_d_norm,
                           "discriminator": params(d, (1, stage.height, stage.width, 12)),
                           "discriminator_scales": stage.num_d}
        else:
            g, d = factory.build_models(config, stage.generator, stage.num_d)
            out[stage.name] = {"size": [stage.height, stage.width],
                               "generator": params(g, (1, stage.height, stage.width, g_channels)),
                               "discriminator": params(d, (1, stage.height, stage.width, 12)),
                               "discriminator_scales": stage.num_d}
    return out


if __name__ == "__main__":
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", "configs/paper.py", "Config whose stages and models to count.")
    app.run(lambda argv: print(json.dumps(count(_CONFIG.value), indent=2)))
