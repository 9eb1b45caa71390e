"""Image metrics as pure jax.numpy functions (jit-able)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    w = jnp.exp(-(x ** 2) / (2 * sigma ** 2))
    return w / w.sum()


def _blur(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable 'valid' Gaussian filter over H and W of [N, H, W, C]."""
    c = x.shape[-1]
    kh = jnp.tile(window[:, None, None, None], (1, 1, 1, c))
    kw = jnp.tile(window[None, :, None, None], (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)


WINDOW = 11  # SSIM's Gaussian window; the map is 'valid', so it is WINDOW - 1 smaller than the image


def ssim_map(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Per-pixel SSIM [N, H - 10, W - 10], averaged over channels; pixel (i, j) is the window at (i+5, j+5)."""
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    window = _gaussian_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    sxx = _blur(x * x, window) - mu_x ** 2
    syy = _blur(y * y, window) - mu_y ** 2
    sxy = _blur(x * y, window) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return jnp.mean(num / den, axis=-1)


def ssim(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Mean SSIM per image of [N, H, W, C] batches (Wang et al. 2004: 11x11 Gaussian, sigma 1.5)."""
    return jnp.mean(ssim_map(x, y, data_range), axis=(1, 2))


def masked_ssim(x: jax.Array, y: jax.Array, boxes: jax.Array, data_range: float = 1.0) -> jax.Array:
    """SSIM per image averaged over windows centred inside ``boxes`` [N, 4] (x0, y0, x1, y1 pixels).

    The paper's body and face crops, without a per-size recompile: one map, a different mask per image.
    """
    smap = ssim_map(x, y, data_range)
    half = WINDOW // 2
    rows = jnp.arange(smap.shape[1], dtype=jnp.float32)[None, :, None] + half
    cols = jnp.arange(smap.shape[2], dtype=jnp.float32)[None, None, :] + half
    b = boxes.astype(jnp.float32)[:, :, None, None]
    mask = (cols >= b[:, 0]) & (cols <= b[:, 2]) & (rows >= b[:, 1]) & (rows <= b[:, 3])
    return jnp.sum(smap * mask, axis=(1, 2)) / jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1)
