"""pix2pixHD's networks in flax.linen (NHWC): the global generator and multiscale discriminators."""

import math

import jax

from edn_jax.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator, downsample
from edn_jax.models.generator import GlobalGenerator, ResnetBlock
from edn_jax.models.layers import InstanceNorm, conv, conv_transpose_x2, reflect_pad


def param_count(params) -> int:
    """Number of scalars in a parameter pytree (arrays or ``jax.eval_shape`` shapes)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


__all__ = [
    "GlobalGenerator", "InstanceNorm", "MultiscaleDiscriminator", "NLayerDiscriminator", "ResnetBlock",
    "conv", "conv_transpose_x2", "downsample", "param_count", "reflect_pad",
]
