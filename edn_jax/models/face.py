"""Everybody Dance Now's face GAN: a residual generator and a PatchGAN on fixed-size face crops.

After the main generator G is trained, a second generator sees the stick figure's
face crop and G's face crop and predicts a residual added to G's crop; a single
discriminator judges (label crop, face crop) pairs.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from edn_jax.models import layers
from edn_jax.models.discriminator import NLayerDiscriminator
from edn_jax.models.generator import GlobalGenerator
from edn_jax.models.layers import Dtype


class FaceResidualGenerator(nn.Module):
    """A GlobalGenerator on concat(label crop, G's crop) whose tanh output is a residual to G's crop.

    The output conv (``head``) starts at zero, kernel and bias: at the start of the
    face stage the residual is exactly 0 and the refined crop is G's crop, so the
    stage begins from the main model's output rather than from noise. Parameters:
    ``generator`` (a GlobalGenerator's tree without its own head) and ``head``.
    """

    ngf: int = 32
    n_downsampling: int = 3
    n_blocks: int = 5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.generator = GlobalGenerator(output_nc=3, ngf=self.ngf, n_downsampling=self.n_downsampling,
                                         n_blocks=self.n_blocks, dtype=self.dtype, param_dtype=self.param_dtype)
        self.head = nn.Conv(3, (7, 7), padding="VALID", kernel_init=nn.initializers.zeros,
                            bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.param_dtype,
                            conv_general_dilated=layers.conv_general_dilated)

    def residual(self, label_crop: jnp.ndarray, g_crop: jnp.ndarray) -> jnp.ndarray:
        """The correction in [-1, 1] (tanh) that ``__call__`` adds to ``g_crop``."""
        f = self.generator.features(jnp.concatenate([label_crop, g_crop], axis=-1))
        return jnp.tanh(self.head(layers.reflect_pad(f, 3)))

    def __call__(self, label_crop: jnp.ndarray, g_crop: jnp.ndarray) -> jnp.ndarray:
        """The refined crop: ``g_crop + residual``, clipped to the image range [-1, 1]."""
        refined = g_crop + self.residual(label_crop, g_crop).astype(g_crop.dtype)
        return jnp.clip(refined, -1.0, 1.0)


class FaceDiscriminator(nn.Module):
    """One 70x70 PatchGAN (NLayerDiscriminator) on concat(label crop, face crop).

    Returns a one-scale list ``[features]`` and names its parameters ``scale_0``, as a
    one-scale MultiscaleDiscriminator, so the LSGAN and feature-matching losses apply unchanged.
    ``norm="batch"`` is the original's face D (BatchNorm; ``mask`` [B] picks the crops of
    frames with a face for its statistics); ``"instance"`` the multiscale D's norm.
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, label_crop: jnp.ndarray, crop: jnp.ndarray, mask: jnp.ndarray | None = None,
                 use_running_average: bool = False) -> list[list[jnp.ndarray]]:
        d = NLayerDiscriminator(self.ndf, self.n_layers, norm=self.norm, dtype=self.dtype,
                                param_dtype=self.param_dtype, name="scale_0")
        return [d(jnp.concatenate([label_crop, crop], axis=-1), mask, use_running_average)]


def face_models(ngf: int = 32, ndf: int = 64, dtype: Dtype = jnp.float32):
    """The face stage's (generator, discriminator) at the paper's depth (3 down, 5 blocks; 3-layer D)."""
    return FaceResidualGenerator(ngf=ngf, dtype=dtype), FaceDiscriminator(ndf=ndf, dtype=dtype)
