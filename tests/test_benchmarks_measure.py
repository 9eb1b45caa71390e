"""benchmarks/measure.py measures the config's model: its plate and exemplar inputs included
(no speed asserted)."""

import jax.numpy as jnp
import numpy as np
from helpers import tiny_config

from benchmarks import measure
from edn_jax.models import inference, param_count


def _with_plate_and_exemplar():
    config = tiny_config()
    config.model.background, config.model.exemplar = "composite", "copy"
    return config


def test_the_train_step_and_the_renderer_measured_are_the_configs_model():
    config, plain = _with_plate_and_exemplar(), tiny_config()
    train = measure.train_step(config, "global", steps=1)
    assert np.isfinite(train["step_s_median"]) and train["flops_per_step"] > 0
    renderer, params = measure.renderer_and_params(config, "global", 32, 32, face=False)
    _, plain_params = measure.renderer_and_params(plain, "global", 32, 32, face=False)
    # The trainer's G and the measured renderer's are one network: 9 more input channels (the
    # plate, the exemplar frame and figure) and 2 more output channels (the plate's mask, the copy mask)
    # in the 7x7 convolutions at either end than the plain model's.
    assert train["g_params"] == param_count(params["g"])
    ngf = config.model.ngf
    assert param_count(params["g"]) - param_count(plain_params["g"]) == 9 * 49 * ngf + 2 * (49 * ngf + 1)
    assert params["background"].shape == (1, 32, 32, 3) and renderer.uses_exemplar

    labels, boxes, valid = measure.stick_figures(4, 32, 32)
    exemplars = measure.exemplars_for(renderer, labels)
    assert exemplars.shape == (4, 32, 32, 6)
    np.testing.assert_array_equal(exemplars[1:, ..., 3:], labels[:-1])  # each frame's figure is the one before
    first = measure.render_frames(renderer, params, labels, boxes, valid, 2, exemplars)
    other = measure.render_frames(renderer, params, labels, boxes, valid, 2, -exemplars)
    assert float(jnp.abs(first - other).max()) > 1e-3  # the exemplars reach the frames rendered
    assert measure.exemplars_for(inference.Renderer.from_config(plain, renderer.generator), labels) is None
