"""Sequential rendering: each frame is generated from its stick figure and the previous output.

One ``jax.lax.scan`` over a chunk of frames, carrying the previous output, so a
whole chunk is a single compiled call; chunks can be chained by passing the last
output on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from edn_jax.train import generator_input


@functools.partial(jax.jit, static_argnames=("generator", "use_prev_label"))
def render_chunk(generator, g_params, labels, prev_output, prev_label, use_prev_label: bool = False):
    """Renders [T, H, W, 3] stick figures (in [-1, 1]) given the frame before the chunk.

    Returns (outputs [T, H, W, 3], last output, last label) to continue with the next chunk.
    For the first chunk of a video pass zeros (mid-grey) as ``prev_output`` and ``prev_label``.
    """

    def step(carry, label):
        prev, prev_lab = carry
        out = generator.apply({"params": g_params}, generator_input(label[None], prev, prev_lab, use_prev_label))
        out = out.astype(jnp.float32)
        return (out, label[None]), out[0]

    (last, last_label), outputs = jax.lax.scan(step, (prev_output, prev_label), labels)
    return outputs, last, last_label
