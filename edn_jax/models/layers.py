"""Building blocks shared by the generator and the discriminators (NHWC).

Conventions, as in pix2pixHD: conv kernels start from N(0, 0.02) (its
``weights_init``), biases from zero; normalization is instance norm without
affine parameters. Every module takes ``dtype`` (the computation dtype, e.g.
bfloat16) and ``param_dtype`` (float32: parameters and optimizer state stay
full precision); outputs come out in ``dtype``.

Speed on CPU: some convolutions are computed in an equivalent form that XLA:CPU has fast
kernels for, in the forward pass and in both gradients (``Conv``: padding outside the conv,
``stride2_conv``'s space-to-depth gradients for stride 2, ``narrow_output_conv`` for the 7x7 RGB heads;
``ConvTransposeX2``: the sub-pixel form). Parameters (names, shapes, init) are those of
``nn.Conv`` / ``nn.ConvTranspose``; results agree with the plain convolutions to float32
rounding (tests/test_models.py). See benchmarks/RESULTS.md for the measured effect.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

conv_kernel_init = nn.initializers.normal(stddev=0.02)
_NHWC = ("NHWC", "HWIO", "NHWC")


def _valid_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


def _row_folded_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """VALID stride-1 conv as a 1 x kw conv to kh * O channels (one per kernel row), then the sum
    of those kh channel groups shifted by their row: y[h] = sum_ky z[h + ky, ky]. Same result."""
    kh, kw, i, o = kernel.shape
    folded = kernel.transpose(1, 2, 0, 3).reshape(1, kw, i, kh * o)  # [1, kx, I, (ky, O)]
    z = lax.conv_general_dilated(x, folded, (1, 1), "VALID", dimension_numbers=_NHWC,
                                 preferred_element_type=jnp.float32)
    n, hp, w, _ = z.shape
    z = z.reshape(n, hp, w, kh, o)
    h = hp - kh + 1
    y = z[:, 0:h, :, 0, :]
    for ky in range(1, kh):
        y = y + z[:, ky:ky + h, :, ky, :]
    return y.astype(jnp.result_type(x, kernel))


def _computed_as(forward, differentiated_as):
    """``forward(x, kernel)`` whose gradients are ``differentiated_as``'s (a custom VJP).

    Both compute the same convolution; XLA:CPU has a fast kernel for the one in each
    direction but not for the other, so the forward pass takes one form and the backward
    pass the other's VJP.
    """
    fn = jax.custom_vjp(forward)
    fn.defvjp(lambda x, kernel: (forward(x, kernel), (x, kernel)),
              lambda residuals, g: jax.vjp(differentiated_as, *residuals)[1](g))
    return fn  # jax.custom_vjp keeps forward's name and docstring


# A VALID stride-1 NHWC conv for large kernels with few output channels (the 7x7 RGB heads).
# XLA:CPU runs such a conv at a small fraction of its conv throughput: each output pixel
# gathers a kh*kw*I patch for only O (= 3) dot products. The forward pass is the row-folded
# form (one patch row feeds kh * O outputs), about 4x faster on the 7x7 16 -> 3 head; the
# backward pass is the plain conv's own (faster there).
narrow_output_conv = _computed_as(_row_folded_conv, _valid_conv)


def _use_row_folding(kernel_shape) -> bool:
    kh, kw, _, o = kernel_shape
    return kh >= 5 and kw >= 5 and kh * o <= 32


def space_to_depth_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """VALID stride-2 NHWC conv as a stride-1 conv of the input's 2x2 space-to-depth rearrangement.

    The kernel is zero-padded to even size and split the same way ([kh/2, kw/2, 4 I, O]), so
    output (i, j) still sums x[2i + ky, 2j + kx] w[ky, kx]: the same result. Why: XLA:CPU
    computes a strided conv's input gradient as a conv over the 2x-dilated output gradient,
    and has no fast kernel for that (10-15x the forward time, on one thread); here the
    forward pass and both gradients are stride-1 convolutions (plus reshapes).
    """
    kh, kw, i, o = kernel.shape
    n, hp, wp, _ = x.shape
    ho, wo = (hp - kh) // 2 + 1, (wp - kw) // 2 + 1
    kh2, kw2 = -(-kh // 2), -(-kw // 2)
    kernel = jnp.pad(kernel, ((0, 2 * kh2 - kh), (0, 2 * kw2 - kw), (0, 0), (0, 0)))
    hn, wn = 2 * (ho + kh2 - 1), 2 * (wo + kw2 - 1)  # rows/columns the (padded) kernel reaches
    x = jnp.pad(x[:, :hn, :wn], ((0, 0), (0, max(0, hn - hp)), (0, max(0, wn - wp)), (0, 0)))
    x = x.reshape(n, hn // 2, 2, wn // 2, 2, i).transpose(0, 1, 3, 2, 4, 5).reshape(n, hn // 2, wn // 2, 4 * i)
    kernel = kernel.reshape(kh2, 2, kw2, 2, i, o).transpose(0, 2, 1, 3, 4, 5).reshape(kh2, kw2, 4 * i, o)
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


def _stride2_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """A VALID stride-2 NHWC conv: the plain strided conv forward, ``space_to_depth_conv``'s gradients.

    The forward pass stays the strided conv because XLA:CPU runs it about 2x faster than the
    space-to-depth form (whose gathers are not free); only the gradients, where the strided
    form is slow (see ``space_to_depth_conv``), go through the rearrangement.
    """
    return lax.conv_general_dilated(x, kernel, (2, 2), "VALID", dimension_numbers=_NHWC)


stride2_conv = _computed_as(_stride2_conv, space_to_depth_conv)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` (what ``Conv`` calls), in a form XLA:CPU runs faster where one applies
    to a 2D NHWC/HWIO, VALID, undilated, ungrouped conv: ``stride2_conv`` for stride 2, and
    ``narrow_output_conv`` for stride 1 with a kernel of at least 5x5 and kh * O <= 32 output-channel
    rows (e.g. a 7x7 conv to 3 channels). Anything else goes to ``lax.conv_general_dilated`` as is."""
    plain = all(v is None or tuple(v) == (1, 1) for v in (lhs_dilation, rhs_dilation))
    valid = padding == "VALID" or (not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding))
    nhwc = dimension_numbers is not None and lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, dimension_numbers) == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    if lhs.ndim == 4 and plain and valid and nhwc and feature_group_count == 1 and precision is None and not kwargs:
        if tuple(window_strides) == (2, 2):
            return stride2_conv(lhs, rhs)
        if tuple(window_strides) == (1, 1) and _use_row_folding(rhs.shape):
            return narrow_output_conv(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)


class Conv(nn.Conv):
    """``nn.Conv`` whose zero padding is an explicit ``jnp.pad`` of the input followed by a VALID conv.

    Same parameters (``kernel`` HWIO, ``bias``), same result. Why: for the discriminator's
    stride-1 4x4 convs with padding 2 (the output is larger than the input), XLA:CPU
    lowers the kernel gradient of a conv that pads internally to a naive loop nest
    (a reversed-kernel convolution it has no fast kernel for), 20-50x slower than the
    forward conv; with the padding outside, that gradient is an ordinary convolution.
    """

    zero_padding: int = 0

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        p = self.zero_padding
        if p:
            inputs = jnp.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0)))
        return super().__call__(inputs)


def conv(features: int, kernel_size: int, strides: int = 1, padding: int = 0, *, use_bias: bool = True,
         dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
    """A square conv with zero padding ``padding`` on each side (PyTorch's ``Conv2d`` semantics).

    ``use_bias=False`` where an InstanceNorm follows: the norm subtracts each channel's
    mean, so such a bias has an exactly zero gradient. pix2pixHD keeps these biases; here
    they are dropped, because Adam turns their rounding-noise gradients into
    learning-rate-sized random steps.
    """
    return Conv(features, (kernel_size, kernel_size), strides=(strides, strides), padding="VALID",
                zero_padding=padding, kernel_init=conv_kernel_init, use_bias=use_bias,
                bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=param_dtype, name=name,
                conv_general_dilated=conv_general_dilated)


# Sub-pixel form of the 3x3 stride-2 transposed conv: output row 2a + p (phase p) is
# sum over d in {0, 1} of input row a + d times kernel row _PHASE_TAP[d][p] (None: no tap).
# From y[o] = sum_k x_dilated_padded[o + k] w[k] with x_dilated_padded[j] = x[(j - 1) / 2]
# for odd j: y[2a] = x[a] w[1] and y[2a + 1] = x[a] w[0] + x[a + 1] w[2].
_PHASE_TAP = ((1, 0), (None, 2))


def subpixel_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
    """[3, 3, I, O] transposed-conv kernel -> [2, 2, I, 4 * O] kernel of the equivalent 2x2 conv
    whose output channels are (phase_y, phase_x, O), zeros where a phase has no tap."""
    zero = jnp.zeros_like(kernel[0, 0])

    def tap(ky, kx):
        return zero if ky is None or kx is None else kernel[ky, kx]

    rows = [jnp.stack([jnp.stack([jnp.stack([tap(_PHASE_TAP[dy][py], _PHASE_TAP[dx][px]) for px in range(2)], axis=1)
                                  for py in range(2)], axis=1)
                       for dx in range(2)])
            for dy in range(2)]  # each [dx, I, py, px, O]
    i, o = kernel.shape[2:]
    return jnp.stack(rows).reshape(2, 2, i, 4 * o)


class ConvTransposeX2(nn.Module):
    """3x3 stride-2 transposed conv that exactly doubles H and W (see ``conv_transpose_x2``).

    The parameters are ``nn.ConvTranspose``'s (``kernel`` [3, 3, I, O], ``bias``, same init),
    but the computation is its sub-pixel form: one 2x2 conv of the input (padded by one
    row and column at the end) to 4 * O channels, one per output phase, interleaved into the
    2x larger output. Same result; it never multiplies the zeros of the 2x-dilated input
    (``nn.ConvTranspose`` does: 36 multiply-adds per input pixel and channel pair, here 16)
    and, unlike the dilated form, XLA:CPU has fast kernels for its gradients.
    """

    features: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = conv_kernel_init
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", self.kernel_init, (3, 3, inputs.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        n, h, w, _ = inputs.shape
        y = lax.conv_general_dilated(inputs, subpixel_kernel(kernel), (1, 1), ((0, 1), (0, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, self.features)
        return y if bias is None else y + bias


def conv_transpose_x2(features: int, *, use_bias: bool = True, dtype: Dtype = jnp.float32,
                      param_dtype: Dtype = jnp.float32, name: str | None = None) -> ConvTransposeX2:
    """3x3 stride-2 transposed conv that exactly doubles H and W.

    Matches PyTorch's ``ConvTranspose2d(k=3, s=2, padding=1, output_padding=1)``: a
    stride-1 conv over the 2x-dilated input padded by (k-1-p, k-1-p+output_padding)
    = (1, 2). The kernel is HWIO and is the PyTorch weight flipped in space:
    ``kernel[ky, kx, i, o] == torch_weight[i, o, 2 - ky, 2 - kx]``. Computed in the
    equivalent sub-pixel form (``ConvTransposeX2``); parameters as ``nn.ConvTranspose``'s.
    """
    return ConvTransposeX2(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name)


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
