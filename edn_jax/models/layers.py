"""Building blocks shared by the generator and the discriminators (NHWC).

Conventions, as in pix2pixHD: conv kernels start from N(0, 0.02) (its
``weights_init``), biases from zero; normalization is instance norm without
affine parameters. Every module takes ``dtype`` (the computation dtype, e.g.
bfloat16) and ``param_dtype`` (float32: parameters and optimizer state stay
full precision); outputs come out in ``dtype``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

Dtype = Any

conv_kernel_init = nn.initializers.normal(stddev=0.02)


def conv(features: int, kernel_size: int, strides: int = 1, padding: int = 0, *, use_bias: bool = True,
         dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
    """A square conv with zero padding ``padding`` on each side (PyTorch's ``Conv2d`` semantics).

    ``use_bias=False`` where an InstanceNorm follows: the norm subtracts each channel's
    mean, so such a bias has an exactly zero gradient. pix2pixHD keeps these biases; here
    they are dropped, because Adam turns their rounding-noise gradients into
    learning-rate-sized random steps.
    """
    return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                   padding=((padding, padding), (padding, padding)), kernel_init=conv_kernel_init,
                   use_bias=use_bias, bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                   name=name)


def conv_transpose_x2(features: int, *, use_bias: bool = True, dtype: Dtype = jnp.float32,
                      param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.ConvTranspose:
    """3x3 stride-2 transposed conv that exactly doubles H and W.

    Matches PyTorch's ``ConvTranspose2d(k=3, s=2, padding=1, output_padding=1)``: a
    stride-1 conv over the 2x-dilated input padded by (k-1-p, k-1-p+output_padding)
    = (1, 2). The kernel is HWIO and is the PyTorch weight flipped in space:
    ``kernel[ky, kx, i, o] == torch_weight[i, o, 2 - ky, 2 - kx]``.
    """
    return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                            kernel_init=conv_kernel_init, use_bias=use_bias, bias_init=nn.initializers.zeros,
                            dtype=dtype, param_dtype=param_dtype, name=name)


def reflect_pad(x: jnp.ndarray, p: int) -> jnp.ndarray:
    """Reflection padding of H and W by ``p`` (PyTorch's ``ReflectionPad2d``), avoiding border artifacts."""
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters (pix2pixHD's ``affine=False``).

    Statistics are per example and channel over H and W, always in float32: bfloat16
    sums over a 512x1024 map would lose the mean. No parameters, so no ``param_dtype``.
    ``dtype`` is the output dtype (``None``: the input's).
    """

    epsilon: float = 1e-5
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)  # biased, as PyTorch
        y = (x32 - mean) * lax.rsqrt(var + self.epsilon)
        return y.astype(x.dtype if self.dtype is None else self.dtype)
