"""SSIM and its body-crop (masked) variant."""

import jax.numpy as jnp
import numpy as np

from edn_jax import metrics


def _images(seed, n=2, size=40):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32))


def test_ssim_identity_and_noise():
    x = _images(0)
    np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-5)
    noisy = jnp.clip(x + 0.2 * _images(1) - 0.1, 0, 1)
    assert float(metrics.ssim(x, noisy).max()) < 0.99


def test_masked_ssim_is_the_mean_of_the_map_inside_the_box():
    x, y = _images(2), _images(3)
    whole = jnp.array([[0, 0, 40, 40]] * 2, jnp.float32)
    np.testing.assert_allclose(metrics.masked_ssim(x, y, whole), metrics.ssim(x, y), atol=1e-6)
    # Equal content inside a box, different outside: windows centred well inside the box score 1.
    inside = y.at[:, 8:32, 8:32].set(x[:, 8:32, 8:32])
    box = jnp.array([[13, 13, 26, 26]] * 2, jnp.float32)  # windows reach 5 px beyond their centres
    np.testing.assert_allclose(metrics.masked_ssim(x, inside, box), 1.0, atol=1e-5)
    assert float(metrics.ssim(x, inside).max()) < 0.9
    smap = metrics.ssim_map(x, y)
    np.testing.assert_allclose(metrics.masked_ssim(x, y, box), smap[:, 8:22, 8:22].mean(axis=(1, 2)), atol=1e-6)
