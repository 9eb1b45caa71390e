"""pix2pixHD's global generator (Wang et al. 2018), the image network of Everybody Dance Now.

The input is whatever the caller concatenates on channels (stick figure, previous
output frame, optionally the previous stick figure), NHWC with values in [-1, 1];
the output is an image in [-1, 1] (tanh) at the input's resolution.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from edn_jax.errors import EdnError
from edn_jax.models import layers
from edn_jax.models.layers import Dtype


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convs with instance norm, added to the input (``x + F(x)``)."""

    dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = layers.InstanceNorm(dtype=self.dtype)
        y = layers.conv(self.dim, 3, use_bias=False, name="conv1", **kw)(layers.reflect_pad(x, 1))
        y = nn.relu(norm(y))
        y = layers.conv(self.dim, 3, use_bias=False, name="conv2", **kw)(layers.reflect_pad(y, 1))
        return x + norm(y)


class GlobalGenerator(nn.Module):
    """7x7 stem, ``n_downsampling`` stride-2 convs, ``n_blocks`` ResnetBlocks, as many
    2x transposed convs, then a 7x7 conv to ``output_nc`` channels and tanh.

    ``features`` is everything but that last conv: pix2pixHD's LocalEnhancer adds the
    global generator's features to its local branch, so it calls ``features`` alone
    (the head then has no parameters there) and keeps the same parameter names.
    """

    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 4
    n_blocks: int = 9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n = self.n_downsampling
        self.stem = layers.conv(self.ngf, 7, use_bias=False, **kw)
        self.down = [layers.conv(self.ngf * 2 ** (i + 1), 3, strides=2, padding=1, use_bias=False, **kw) for i in range(n)]
        self.blocks = [ResnetBlock(self.ngf * 2 ** n, **kw) for _ in range(self.n_blocks)]
        self.up = [layers.conv_transpose_x2(self.ngf * 2 ** (n - i - 1), use_bias=False, **kw) for i in range(n)]
        self.head = layers.conv(self.output_nc, 7, **kw)
        self.norm = layers.InstanceNorm(dtype=self.dtype)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The last feature map (``ngf`` channels, input resolution) before the output conv."""
        self._check_size(x)
        y = nn.relu(self.norm(self.stem(layers.reflect_pad(x, 3))))
        for down in self.down:
            y = nn.relu(self.norm(down(y)))
        for block in self.blocks:
            y = block(y)
        for up in self.up:
            y = nn.relu(self.norm(up(y)))
        return y

    def __call__(self, x: jnp.ndarray, return_features: bool = False):
        """The image in [-1, 1]; with ``return_features`` the pair ``(image, features(x))``."""
        f = self.features(x)
        image = jnp.tanh(self.head(layers.reflect_pad(f, 3)))
        return (image, f) if return_features else image

    def _check_size(self, x: jnp.ndarray) -> None:
        m = 2 ** self.n_downsampling
        h, w = x.shape[1:3]
        if h % m or w % m:
            raise EdnError(
                f"generator input is {h}x{w} (HxW), but height and width must be divisible by "
                f"2**n_downsampling = {m}",
                f"resize or crop frames to a multiple of {m} (e.g. {max(m, h // m * m)}x{max(m, w // m * m)}) "
                f"or lower model.n_downsampling")
