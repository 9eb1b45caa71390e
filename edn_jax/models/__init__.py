"""pix2pixHD's networks in flax.linen (NHWC): global generator, local enhancer, multiscale
discriminators, and the face GAN's residual generator and patch discriminator."""

import math

import jax

from edn_jax.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator, downsample
from edn_jax.models.face import FaceDiscriminator, FaceResidualGenerator, face_models
from edn_jax.models.generator import GlobalGenerator, ResnetBlock
from edn_jax.models.layers import InstanceNorm, conv, conv_transpose_x2, reflect_pad
from edn_jax.models.local_enhancer import LocalEnhancer, load_global_params


def param_count(params) -> int:
    """Number of scalars in a parameter pytree (arrays or ``jax.eval_shape`` shapes)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


__all__ = [
    "FaceDiscriminator", "FaceResidualGenerator", "GlobalGenerator", "InstanceNorm", "LocalEnhancer",
    "MultiscaleDiscriminator", "NLayerDiscriminator", "ResnetBlock", "conv", "conv_transpose_x2", "downsample",
    "face_models", "load_global_params", "param_count", "reflect_pad",
]
