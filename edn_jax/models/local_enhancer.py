"""pix2pixHD's LocalEnhancer: a full-resolution branch around a GlobalGenerator run at half resolution.

pix2pixHD trains the GlobalGenerator first at half resolution, then wraps it: the
global generator's last features (before its output conv) are added to the local
branch's downsampled features, and the local branch upsamples to the output.
The global stage's parameters live under ``global_generator`` with a standalone
GlobalGenerator's tree minus its unused ``head``, so ``load_global_params`` can
start the local stage from a trained global model.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from edn_jax.errors import EdnError
from edn_jax.models import layers
from edn_jax.models.discriminator import downsample
from edn_jax.models.generator import GlobalGenerator, ResnetBlock
from edn_jax.models.layers import Dtype


class LocalEnhancer(nn.Module):
    """Local front (7x7 conv ``ngf``, 3x3 stride-2 conv ``2 * ngf``) + global features of the
    2x-downsampled input, ``n_blocks_local`` ResnetBlocks, a 2x transposed conv, a 7x7 conv, tanh.

    The sum needs ``global_ngf == 2 * ngf`` channels on both sides, and H, W divisible by
    ``2 * 2**n_downsampling_global`` (the global generator's divisibility at half size).
    """

    ngf: int = 32
    global_ngf: int = 64
    n_downsampling_global: int = 4
    n_blocks_global: int = 9
    n_blocks_local: int = 3
    output_nc: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if self.global_ngf != 2 * self.ngf:
            raise EdnError(f"LocalEnhancer adds global features ({self.global_ngf} channels) to local ones "
                           f"({2 * self.ngf} = 2 * ngf channels), which must match",
                           f"set global_ngf = 2 * ngf (e.g. ngf={self.global_ngf // 2}, global_ngf={self.global_ngf})")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.global_generator = GlobalGenerator(output_nc=self.output_nc, ngf=self.global_ngf,
                                                n_downsampling=self.n_downsampling_global,
                                                n_blocks=self.n_blocks_global, **kw)
        self.stem = layers.conv(self.ngf, 7, use_bias=False, **kw)
        self.down = layers.conv(2 * self.ngf, 3, strides=2, padding=1, use_bias=False, **kw)
        self.blocks = [ResnetBlock(2 * self.ngf, **kw) for _ in range(self.n_blocks_local)]
        self.up = layers.conv_transpose_x2(self.ngf, use_bias=False, **kw)
        self.head = layers.conv(self.output_nc, 7, **kw)
        self.norm = layers.InstanceNorm(dtype=self.dtype)

    def global_features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The global generator's ``features`` of the 2x-downsampled input (``global_ngf`` channels, half size)."""
        self._check_size(x)
        return self.global_generator.features(downsample(x))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """The image in [-1, 1] at the input's resolution."""
        g = self.global_features(x)
        y = nn.relu(self.norm(self.stem(layers.reflect_pad(x, 3))))
        y = nn.relu(self.norm(self.down(y))) + g
        for block in self.blocks:
            y = block(y)
        y = nn.relu(self.norm(self.up(y)))
        return jnp.tanh(self.head(layers.reflect_pad(y, 3)))

    def _check_size(self, x: jnp.ndarray) -> None:
        m = 2 * 2 ** self.n_downsampling_global
        h, w = x.shape[1:3]
        if h % m or w % m:
            raise EdnError(
                f"LocalEnhancer input is {h}x{w} (HxW), but height and width must be divisible by "
                f"2 * 2**n_downsampling_global = {m}",
                f"resize or crop frames to a multiple of {m} (e.g. {max(m, h // m * m)}x{max(m, w // m * m)}) "
                f"or lower n_downsampling_global")


def load_global_params(local_params: dict[str, Any], global_params: dict[str, Any]) -> dict[str, Any]:
    """``local_params`` with ``global_generator`` replaced by a trained GlobalGenerator's params (its head dropped).

    Both are ``variables["params"]`` trees; the global model must have the local
    model's global configuration (input channels, ngf, depth).
    """
    trained = {k: v for k, v in global_params.items() if k != "head"}
    current = local_params["global_generator"]
    same_tree = jax.tree_util.tree_structure(trained) == jax.tree_util.tree_structure(current)
    if not same_tree or any(jnp.shape(a) != jnp.shape(b) for a, b in
                            zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(current))):
        raise EdnError("the global generator's parameters do not fit the LocalEnhancer's global stage",
                       "load a GlobalGenerator trained with the same input channels, ngf (= global_ngf), "
                       "n_downsampling and n_blocks")
    loaded = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, old.dtype), trained, current)
    return {**local_params, "global_generator": loaded}
