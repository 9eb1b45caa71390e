"""pix2pixHD's PatchGAN discriminators, returning every intermediate feature map.

The intermediate maps feed the feature-matching loss; the last one of each scale is
the patch prediction (raw logits / LSGAN scores, no sigmoid). The input is whatever
the caller concatenates on channels: 12 for the temporal discriminator
(x_{t-1}, x_t, y_{t-1}, y_t), 6 for the face discriminator.

Normalization: InstanceNorm (pix2pixHD's ``--norm instance``, the multiscale D) or
BatchNorm (the original face D): statistics of the batch being judged, over the whole
global batch under a sharded ``jit``, running averages in the ``batch_stats`` collection.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from edn_jax.models import layers
from edn_jax.models.layers import Dtype

_PAD = 2  # pix2pixHD's padw = ceil((kernel 4 - 1) / 2), zero padding
_MAX_CHANNELS = 512
NORMS = ("instance", "batch")


def downsample(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 stride-2 average pool, padding 1, padding excluded from the mean (``count_include_pad=False``)."""
    y = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)
    return y.astype(x.dtype)


class NLayerDiscriminator(nn.Module):
    """4x4 convs: ``n_layers`` stride-2 (the first without norm), one stride-1, then a
    1-channel stride-1 conv; LeakyReLU 0.2. Returns all ``n_layers + 2`` outputs.

    ``norm="batch"``: BatchNorm (torch's defaults: momentum 0.1, eps 1e-5, affine) on the
    batch's statistics, or on the running averages with ``use_running_average``; ``mask``
    [B] (bool) picks the examples the statistics come from (all, if it picks none).
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None,
                 use_running_average: bool = False) -> list[jnp.ndarray]:
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {NORMS}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, padding=_PAD)
        if mask is not None:
            mask = jnp.asarray(mask, bool)
            mask = jnp.where(jnp.any(mask), mask, True)[:, None, None, None]

        def norm(y, n):
            if self.norm == "instance":
                return layers.InstanceNorm(dtype=self.dtype)(y)
            bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                              name=f"norm_{n}")
            return bn(y, use_running_average=use_running_average,
                      mask=None if mask is None else jnp.broadcast_to(mask, y.shape))

        y = nn.leaky_relu(layers.conv(self.ndf, 4, strides=2, name="conv_0", **kw)(x), 0.2)
        outputs = [y]
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            features = min(self.ndf * 2 ** n, _MAX_CHANNELS)
            y = nn.leaky_relu(norm(layers.conv(features, 4, strides=stride, use_bias=False, name=f"conv_{n}", **kw)(y),
                                   n), 0.2)
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


def extend_scales(fresh: dict, previous: dict) -> dict:
    """A MultiscaleDiscriminator's params with every scale the ``previous`` D has taken from it and
    the others kept ``fresh``: the local stage's 3-scale D from the global stage's 2-scale one, as
    pix2pixHD loads a pretrained D into one with more scales (fewer: the extra ones are dropped)."""
    return {name: previous.get(name, params) for name, params in fresh.items()}
