"""benchmarks/conv3x3_algorithms.py: the Winograd convs it times compute the plain 3x3 conv."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from benchmarks import conv3x3_algorithms as algos


@pytest.mark.parametrize("name", sorted(algos.WINOGRAD))
@pytest.mark.parametrize("hw", [(8, 8), (7, 10)])  # whole tiles, and sizes that are no multiple of m
def test_winograd_equals_the_same_padded_conv(name, hw):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, *hw, 5), np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 5, 6), np.float32))
    plain = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = algos.winograd_conv3x3(x, kernel, algos.WINOGRAD[name])
    assert got.shape == plain.shape
    np.testing.assert_allclose(got, plain, atol=1e-4 * float(jnp.max(jnp.abs(plain))))
    # A wrong transform would not be close: flipping the kernel changes the result.
    assert not np.allclose(algos.winograd_conv3x3(x, kernel[::-1], algos.WINOGRAD[name]), plain, atol=1e-2)
