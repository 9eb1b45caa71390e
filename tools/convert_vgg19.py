"""Converts pretrained VGG19 weights into the .npz that ``edn_jax.models.vgg.load_vgg_params`` reads.

Run from the repository root (nothing is downloaded; bring the file):

  python -m tools.convert_vgg19 --src vgg19-dcbb9e9d.pth --out vgg19.npz   # torchvision, needs torch
  python -m tools.convert_vgg19 --src vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 --out vgg19.npz

torchvision: ``features.{i}.weight`` (OIHW) and ``.bias`` -> HWIO. Keras: layers
``block{b}_conv{c}``, already HWIO, but ported from Caffe, so they expect BGR in
[0, 255] minus the Caffe mean, while ``VGG`` feeds RGB normalised with ImageNet
mean/std. That difference is linear, so it is folded into conv1_1 (channels
reversed, scaled by 255 std, the mean offset moved into the bias): the features
then match Keras' own, except within one pixel of the border, where zero padding
differs by under 0.5/255. ``--arch vgg16`` converts VGG16 files the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

import numpy as np

from edn_jax.errors import EdnError
from edn_jax.models import vgg

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras' imagenet_utils "caffe" preprocessing


def torchvision_indices(arch: str) -> dict[str, int]:
    """Our conv name -> index in torchvision's ``features`` Sequential (each conv is followed by a ReLU)."""
    indices, i = {}, 0
    for name, _, _, pool in vgg.conv_layers(arch):
        i += pool  # a MaxPool2d before this conv
        indices[name] = i
        i += 2
    return indices


def from_torchvision(state_dict: Mapping, arch: str = "vgg19", source: str = "state dict") -> dict:
    """Params from a torchvision state dict (torch tensors or numpy arrays; extra keys are ignored)."""
    params = {}
    for name, index in torchvision_indices(arch).items():
        keys = (f"features.{index}.weight", f"features.{index}.bias")
        if not all(k in state_dict for k in keys):
            raise EdnError(f"{source} lacks {keys[0]} / {keys[1]}, so it is not torchvision's {arch}",
                           f"pass the state dict of torchvision.models.{arch}")
        weight, bias = (np.asarray(state_dict[k], np.float32) for k in keys)
        params[name] = {"kernel": weight.transpose(2, 3, 1, 0), "bias": bias}
    return params


def _keras_layer(root, name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    if name not in root:
        raise EdnError(f"{source} has no layer {name}, so it is not Keras' VGG", "pass Keras' VGG weights .h5")
    arrays = []
    root[name].visititems(lambda _, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    kernels = [a for a in arrays if a.ndim == 4]
    biases = [a for a in arrays if a.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise EdnError(f"{source} layer {name} does not hold one kernel and one bias", "pass Keras' VGG weights .h5")
    return kernels[0].astype(np.float32), biases[0].astype(np.float32)


def from_keras_h5(path: str, arch: str = "vgg19") -> dict:
    """Params from Keras' VGG .h5 (weights-only or whole-model file), with Caffe preprocessing folded into conv1_1."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EdnError(f"{path} is not a readable HDF5 file ({e})", "pass Keras' VGG weights .h5") from e
    with f:
        root = f["model_weights"] if "model_weights" in f else f["layers"] if "layers" in f else f
        params = {}
        for name, *_ in vgg.conv_layers(arch):
            block, index = name[4:].split("_")
            kernel, bias = _keras_layer(root, f"block{block}_conv{index}", path)
            params[name] = {"kernel": kernel, "bias": bias}
    kernel, bias = params["conv1_1"]["kernel"], params["conv1_1"]["bias"]
    if kernel.shape[2] != 3:
        raise EdnError(f"{path} conv1_1 takes {kernel.shape[2]} channels, not 3", "pass Keras' VGG weights .h5")
    rgb_kernel = kernel[:, :, ::-1, :]  # Keras' input channel j is BGR, i.e. our RGB channel 2 - j
    std, mean = np.asarray(vgg.IMAGENET_STD), np.asarray(vgg.IMAGENET_MEAN)
    offset = 255.0 * mean - np.asarray(CAFFE_MEAN_BGR[::-1])  # Keras' input where ours is 0, per RGB channel
    params["conv1_1"] = {
        "kernel": (rgb_kernel * (255.0 * std)[:, None]).astype(np.float32),
        "bias": (bias + np.einsum("hwco,c->o", rgb_kernel.astype(np.float64), offset)).astype(np.float32),
    }
    return params


def convert(src: str, arch: str = "vgg19") -> dict:
    """Params from a torchvision .pth/.pt (needs torch) or a Keras .h5/.hdf5, chosen by suffix."""
    if not os.path.isfile(src):
        raise EdnError(f"weights file {src} does not exist", "pass an existing .pth or .h5 file")
    suffix = os.path.splitext(src)[1].lower()
    if suffix in (".h5", ".hdf5"):
        return from_keras_h5(src, arch)
    if suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:
            raise EdnError(f"reading {src} needs torch, which is not installed",
                           "install torch, or convert Keras' .h5 instead") from e
        try:
            state = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable checkpoint
            raise EdnError(f"{src} is not a readable torch state dict ({e})", "pass torchvision's vgg19 .pth") from e
        return from_torchvision({k: v.numpy() for k, v in state.items()}, arch, src)
    raise EdnError(f"{src}: unknown weights format {suffix!r}", "pass a torchvision .pth or a Keras .h5")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="torchvision .pth/.pt or Keras .h5")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--arch", default="vgg19", choices=sorted(vgg.CONFIGS))
    args = parser.parse_args(argv)
    try:
        params = convert(args.src, args.arch)
        vgg.save_vgg_params(params, args.out)
        vgg.load_vgg_params(args.arch, args.out)  # what training will do; fails here rather than there
    except EdnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.arch} weights to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
