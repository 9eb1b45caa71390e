"""pix2pixHD's PatchGAN discriminators, returning every intermediate feature map.

The intermediate maps feed the feature-matching loss; the last one of each scale is
the patch prediction (raw logits / LSGAN scores, no sigmoid). The input is whatever
the caller concatenates on channels: 12 for the temporal discriminator
(x_{t-1}, x_t, y_{t-1}, y_t), 6 for the face discriminator.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from edn_jax.models import layers
from edn_jax.models.layers import Dtype

_PAD = 2  # pix2pixHD's padw = ceil((kernel 4 - 1) / 2), zero padding
_MAX_CHANNELS = 512


def downsample(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 stride-2 average pool, padding 1, padding excluded from the mean (``count_include_pad=False``)."""
    y = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)
    return y.astype(x.dtype)


class NLayerDiscriminator(nn.Module):
    """4x4 convs: ``n_layers`` stride-2 (the first without norm), one stride-1, then a
    1-channel stride-1 conv; LeakyReLU 0.2. Returns all ``n_layers + 2`` outputs."""

    ndf: int = 64
    n_layers: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> list[jnp.ndarray]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, padding=_PAD)
        norm = layers.InstanceNorm(dtype=self.dtype)
        y = nn.leaky_relu(layers.conv(self.ndf, 4, strides=2, name="conv_0", **kw)(x), 0.2)
        outputs = [y]
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            features = min(self.ndf * 2 ** n, _MAX_CHANNELS)
            y = nn.leaky_relu(norm(layers.conv(features, 4, strides=stride, use_bias=False, name=f"conv_{n}", **kw)(y)), 0.2)
            outputs.append(y)
        outputs.append(layers.conv(1, 4, name=f"conv_{self.n_layers + 1}", **kw)(y))
        return outputs


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` independent NLayerDiscriminators (params ``scale_0``...), scale ``i``
    seeing the input downsampled ``i`` times. Returns one feature list per scale,
    full resolution first."""

    num_d: int = 3
    ndf: int = 64
    n_layers: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> list[list[jnp.ndarray]]:
        results = []
        for i in range(self.num_d):
            if i:
                x = downsample(x)
            d = NLayerDiscriminator(self.ndf, self.n_layers, dtype=self.dtype, param_dtype=self.param_dtype,
                                    name=f"scale_{i}")
            results.append(d(x))
        return results
