"""PyTorch eager reference of edn_jax's train step and inference loop, for speed comparisons only.

Not imported by the package or the tests, and run with its own environment (torch is no
dependency of edn_jax):

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install -r benchmarks/requirements-torch.txt
  /tmp/torchvenv/bin/python benchmarks/torch_reference.py train --batch 4 --height 256 --width 256
  /tmp/torchvenv/bin/python benchmarks/torch_reference.py infer --height 256 --width 256

``--compare_json`` takes the JSON a JAX benchmark printed for the same sizes and adds its
parameter counts (with ``param_counts_match``) and the JAX/torch speed ratio. ``--device cuda``
runs on a GPU (each timed call ends with ``torch.cuda.synchronize``; cuDNN autotuning and TF32 on,
the fastest eager settings and XLA's default float32 precision), ``--dtype bfloat16`` under
``torch.autocast``; ``benchmarks/device_check.py`` runs it next to the JAX measurements.

The networks are written out in plain ``torch.nn`` to be the same computation as
``edn_jax/models`` (NCHW, as PyTorch prefers; ``--channels_last`` tries its NHWC memory
format): pix2pixHD's GlobalGenerator (reflect-padded 7x7 stem, stride-2 convs down, residual
blocks, transposed convs up, instance norm without affine parameters and without the conv
biases it would cancel, ReLU, a 7x7 head with bias and tanh) on 6 input channels (stick
figure + previous output); the multiscale NLayer PatchGAN (4x4 convs, padding 2, LeakyReLU
0.2, instance norm, 3x3 average-pool downsampling without the padding in the mean) on the
12-channel temporal pair; a VGG16 or VGG19 feature stack (random weights: only speed matters
here) up to relu5_1; with ``--generator local``, pix2pixHD's LocalEnhancer around the global
generator (the local stage). Parameter counts are printed next to edn_jax's for the same sizes.

``train`` is ``edn_jax.training.generator_stage.train_step``: G renders frame t-1 from a blank previous frame and
frame t from that output; G loss = LSGAN + feature matching (lambda_feat) + VGG perceptual
(lambda_vgg, both frames, pix2pixHD's layer weights); D loss = LSGAN; one Adam step each
(lr 2e-4, betas (0.5, 0.999)). Only the gradients edn_jax computes are computed (G's loss
w.r.t. G's weights, D's loss w.r.t. D's; no VGG weight gradients), the real images' VGG
features and D's real features for feature matching are constants, and D runs once on the
fake and once on the real pair, as in the program XLA compiles from edn_jax's step (it
merges the G and D losses' identical D calls).

``infer`` is ``benchmarks/inference_loop.py`` without the face model: a Python loop over
frames under ``torch.no_grad()``, each conditioned on the previous output.

Defaults are configs/cpu.py's sizes (ngf 16, 3 downsamplings, 3 blocks, ndf 16, 2 scales,
3 D layers, batch 4 at 256x256). Threads: ``--threads`` (default: the CPUs this process may
run on, the size of XLA's CPU thread pool). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# benchmarks/common.py needs only the standard library at import time (it imports jax inside the
# functions that use it), so this torch-only environment shares its timing and memory helpers.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import call_seconds, peak_rss_bytes  # noqa: E402
from benchmarks.device_check import LOCK_ENV, device_lock  # noqa: E402  (standard library only, too)

VGG_CONVS = {  # torchvision's VGG ``features`` up to conv5_1
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512),
}
VGG_FEATURES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Per example and channel over H, W; biased variance, eps 1e-5, no affine (nn.InstanceNorm2d's default)."""
    return F.instance_norm(x, eps=1e-5)


def init_weights(module: nn.Module) -> None:
    """pix2pixHD's N(0, 0.02) conv weights, zero biases (edn_jax.models.layers)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, bias=False)
        self.conv2 = nn.Conv2d(dim, dim, 3, bias=False)

    def forward(self, x):
        y = F.relu(instance_norm(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect"))))
        return x + instance_norm(self.conv2(F.pad(y, (1, 1, 1, 1), mode="reflect")))


class GlobalGenerator(nn.Module):
    def __init__(self, input_nc: int = 6, output_nc: int = 3, ngf: int = 64, n_downsampling: int = 4,
                 n_blocks: int = 9):
        super().__init__()
        n = n_downsampling
        self.stem = nn.Conv2d(input_nc, ngf, 7, bias=False)
        self.down = nn.ModuleList(nn.Conv2d(ngf * 2 ** i, ngf * 2 ** (i + 1), 3, stride=2, padding=1, bias=False)
                                  for i in range(n))
        self.blocks = nn.ModuleList(ResnetBlock(ngf * 2 ** n) for _ in range(n_blocks))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ngf * 2 ** (n - i), ngf * 2 ** (n - i - 1), 3, stride=2, padding=1,
                                                   output_padding=1, bias=False) for i in range(n))
        self.head = nn.Conv2d(ngf, output_nc, 7)
        init_weights(self)

    def features(self, x):
        y = F.relu(instance_norm(self.stem(F.pad(x, (3, 3, 3, 3), mode="reflect"))))
        for down in self.down:
            y = F.relu(instance_norm(down(y)))
        for block in self.blocks:
            y = block(y)
        for up in self.up:
            y = F.relu(instance_norm(up(y)))
        return y

    def forward(self, x):
        return torch.tanh(self.head(F.pad(self.features(x), (3, 3, 3, 3), mode="reflect")))


def downsample(x):
    """3x3 stride-2 average pool without the padding in the mean (pix2pixHD's and edn_jax's)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


class LocalEnhancer(nn.Module):
    """pix2pixHD's LocalEnhancer as edn_jax.models.local_enhancer: the global generator's features
    of the 2x-downsampled input (its head unused, so not counted) added to a local branch."""

    def __init__(self, input_nc: int = 6, output_nc: int = 3, ngf: int = 32, global_ngf: int = 64,
                 n_downsampling_global: int = 4, n_blocks_global: int = 9, n_blocks_local: int = 3):
        super().__init__()
        self.global_generator = GlobalGenerator(input_nc, output_nc, global_ngf, n_downsampling_global, n_blocks_global)
        del self.global_generator.head  # LocalEnhancer calls features() alone: no head parameters
        self.stem = nn.Conv2d(input_nc, ngf, 7, bias=False)
        self.down = nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1, bias=False)
        self.blocks = nn.ModuleList(ResnetBlock(2 * ngf) for _ in range(n_blocks_local))
        self.up = nn.ConvTranspose2d(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.head = nn.Conv2d(ngf, output_nc, 7)
        init_weights(self)

    def forward(self, x):
        g = self.global_generator.features(downsample(x))
        y = F.relu(instance_norm(self.stem(F.pad(x, (3, 3, 3, 3), mode="reflect"))))
        y = F.relu(instance_norm(self.down(y))) + g
        for block in self.blocks:
            y = block(y)
        y = F.relu(instance_norm(self.up(y)))
        return torch.tanh(self.head(F.pad(y, (3, 3, 3, 3), mode="reflect")))


def make_generator(args) -> nn.Module:
    if args.generator == "local":
        return LocalEnhancer(6, 3, args.local_ngf, args.ngf, args.n_down, args.n_blocks, args.n_blocks_local)
    return GlobalGenerator(6, 3, args.ngf, args.n_down, args.n_blocks)


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        convs, cin = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=2)], ndf
        for n in range(1, n_layers + 1):
            cout = min(ndf * 2 ** n, 512)
            convs.append(nn.Conv2d(cin, cout, 4, stride=2 if n < n_layers else 1, padding=2, bias=False))
            cin = cout
        convs.append(nn.Conv2d(cin, 1, 4, stride=1, padding=2))
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        y = F.leaky_relu(self.convs[0](x), 0.2)
        outputs = [y]
        for conv in self.convs[1:-1]:
            y = F.leaky_relu(instance_norm(conv(y)), 0.2)
            outputs.append(y)
        outputs.append(self.convs[-1](y))
        return outputs


class MultiscaleDiscriminator(nn.Module):
    def __init__(self, input_nc: int = 12, num_d: int = 2, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        self.scales = nn.ModuleList(NLayerDiscriminator(input_nc, ndf, n_layers) for _ in range(num_d))
        init_weights(self)

    def forward(self, x):
        results = []
        for i, d in enumerate(self.scales):
            if i:
                x = downsample(x)
            results.append(d(x))
        return results


class VGGFeatures(nn.Module):
    """torchvision's VGG16 or VGG19 ``features`` up to relu5_1 (random weights), on [-1, 1] images
    mapped to ImageNet normalisation as edn_jax.models.vgg.normalize; returns relu{1..5}_1."""

    def __init__(self, arch: str = "vgg16"):
        super().__init__()
        layers, cin, self.pool_before, self.taps = [], 3, [], set()
        pool = False
        for v in VGG_CONVS[arch]:
            if v == "M":
                pool = True
                continue
            if pool or not layers:  # the first conv after each pool: conv1_1, conv2_1, ... conv5_1
                self.taps.add(len(layers))
            layers.append(nn.Conv2d(cin, v, 3, padding=1))
            self.pool_before.append(pool)
            cin, pool = v, False
        self.convs = nn.ModuleList(layers)
        self.register_buffer("shift", (2 * torch.tensor(IMAGENET_MEAN) - 1).view(1, 3, 1, 1))
        self.register_buffer("scale", (2 * torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x):
        x = (x - self.shift) / self.scale
        features = []
        for i, (conv, pool) in enumerate(zip(self.convs, self.pool_before)):
            if pool:
                x = F.max_pool2d(x, 2, 2)
            x = F.relu(conv(x))
            if i in self.taps:
                features.append(x)
        return features


def lsgan(outputs, target: float):
    return sum(torch.mean((scale[-1] - target) ** 2) for scale in outputs)


def feature_matching(real_outputs, fake_outputs, lambda_feat: float):
    d_weight, total = 1.0 / len(fake_outputs), 0.0
    for real_scale, fake_scale in zip(real_outputs, fake_outputs):
        feat_weight = 4.0 / (len(fake_scale) - 2 + 1)
        for real, fake in zip(real_scale[:-1], fake_scale[:-1]):
            total = total + d_weight * feat_weight * lambda_feat * torch.mean(torch.abs(fake - real.detach()))
    return total


def perceptual(vgg, x, y):
    fx = vgg(x)
    with torch.no_grad():
        fy = vgg(y)
    return sum(w * torch.mean(torch.abs(a - b)) for w, a, b in zip(VGG_LAYER_WEIGHTS, fx, fy))


class TrainStep:
    """edn_jax.training.generator_stage.train_step in eager PyTorch."""

    def __init__(self, args):
        self.g = make_generator(args).to(args.device)
        self.d = MultiscaleDiscriminator(12, args.num_d, args.ndf, args.n_layers_d).to(args.device)
        self.vgg = VGGFeatures(args.perceptual).to(args.device) if args.perceptual != "none" else None
        self.lambda_feat, self.lambda_vgg = args.lambda_feat, args.lambda_vgg
        self.autocast = autocast(args)
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def __call__(self, label_prev, label, image_prev, image) -> dict:
        with self.autocast:  # bfloat16: the forward passes and losses in autocast, the backward outside (torch's recipe)
            g_total, d_loss = self.losses(label_prev, label, image_prev, image)
        return self.update(g_total, d_loss)

    def losses(self, label_prev, label, image_prev, image):
        """(G's total loss, D's loss) of one pair."""
        real = torch.cat([label_prev, label, image_prev, image], 1)
        # G: frame t-1 from a blank previous frame, frame t from G's own t-1 (gradients flow through both).
        fake_prev = self.g(torch.cat([label_prev, torch.zeros_like(label_prev)], 1))
        fake = self.g(torch.cat([label, fake_prev], 1))
        fake_in = torch.cat([label_prev, label, fake_prev, fake], 1)
        # One D pass each on the fake and the real pair serves both losses, as in XLA's program
        # for edn_jax's step (it merges the identical D(real) and D(fake) calls of the G and D losses).
        d_fake = self.d(fake_in)
        d_real = self.d(real)
        g_total = lsgan(d_fake, 1.0) + feature_matching(d_real, d_fake, self.lambda_feat)
        if self.vgg is not None:
            g_total = g_total + self.lambda_vgg * (perceptual(self.vgg, fake, image) +
                                                   perceptual(self.vgg, fake_prev, image_prev))
        d_loss = 0.5 * (lsgan(d_real, 1.0) + lsgan(d_fake, 0.0))
        return g_total, d_loss

    def update(self, g_total, d_loss) -> dict:
        # Each loss differentiated w.r.t. its own network only (jax.value_and_grad of g_params /
        # d_params): autograd.grad runs just the backward nodes and outputs those need, so G's pass
        # computes no D or VGG weight gradients and D's pass does not go back into G.
        g_params, d_params = list(self.g.parameters()), list(self.d.parameters())
        g_grads = torch.autograd.grad(g_total, g_params, retain_graph=True)
        d_grads = torch.autograd.grad(d_loss, d_params)
        for params, grads in ((g_params, g_grads), (d_params, d_grads)):
            for p, g in zip(params, grads):
                p.grad = g
        self.g_opt.step()
        self.d_opt.step()
        return {"g_total": g_total.detach(), "d_loss": d_loss.detach()}


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def to_torch(x: np.ndarray, args) -> torch.Tensor:
    """NHWC numpy -> NCHW tensor on ``args.device`` (contiguous, or in torch's channels_last memory format)."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(args.device)
    return t.contiguous(memory_format=torch.channels_last) if args.channels_last else t.contiguous()


def autocast(args):
    """bfloat16: ``torch.autocast`` (float32 weights, bfloat16 compute, as edn_jax's model.dtype);
    float32: a context that does nothing."""
    return torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16,
                          enabled=args.dtype == "bfloat16")


def synced(fn, device: str):
    """``fn`` that returns only once the device has finished its work (eager CUDA calls return early)."""
    if torch.device(device).type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return call


def peak_memory(device: str) -> dict:
    """The CUDA caching allocator's peak (``torch.cuda.max_memory_allocated``), else the process's peak RSS."""
    if torch.device(device).type == "cuda":
        peak, source = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated()"
    else:
        peak, source = peak_rss_bytes(), "process peak RSS (resource.getrusage ru_maxrss)"
    return {"peak_memory_bytes": peak, "peak_memory_mib": round(peak / 2 ** 20, 1), "peak_memory_source": source}


def matmul_peak(device: str = "cpu", dtype: str = "float32", sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
    """torch's square-matmul peak on this device, measured as benchmarks/common.py does for JAX."""
    best, by_n = 0.0, {}
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        a, b = (torch.randn(n, n, generator=g).to(device, getattr(torch, dtype)) for _ in range(2))
        mm = synced(lambda: a @ b, device)
        mm()
        times = call_seconds(mm, repeats)
        rate = 2.0 * n ** 3 / min(times)
        by_n[n] = round(rate / 1e9, 1)
        best = max(best, rate)
    return {"flops_per_s": best, "gflops_per_s": round(best / 1e9, 1), "gflops_per_s_by_n": by_n,
            "method": f"torch {dtype} square matmul on {device}, n in {list(sizes)}, best of {repeats} runs each "
                      "after a warm-up"}


def counted_flops(fn) -> float | None:
    """FLOPs of one ``fn()`` by torch.utils.flop_counter (convolutions and matmuls only, 2 per MAC)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def jax_comparison(path: str | None, result: dict) -> dict:
    """Parameter counts and speed next to a JAX benchmark's JSON (benchmarks/train_step.py or
    inference_loop.py output for the same sizes): the check that both sides build the same networks."""
    if not path:
        return {}
    with open(path) as f:
        jax_result = json.load(f)
    out = {"edn_jax_g_params": jax_result.get("g_params"), "edn_jax_d_params": jax_result.get("d_params")}
    out["param_counts_match"] = (out["edn_jax_g_params"] == result["g_params"] and
                                 ("d_params" not in result or out["edn_jax_d_params"] == result["d_params"]))
    if "images_per_s" in jax_result and "images_per_s" in result:
        out["jax_over_torch_images_per_s"] = round(jax_result["images_per_s"] / result["images_per_s"], 3)
    elif "per_frame" in result:
        for name in ("scan", "per_frame"):
            if name in jax_result:
                out[f"jax_{name}_over_torch_frames_per_s"] = round(
                    jax_result[name]["frames_per_s"] / result["per_frame"]["frames_per_s"], 3)
    return out


def shape_fields(args) -> dict:
    return {"generator": args.generator, "height": args.height, "width": args.width, "ngf": args.ngf,
            "n_down": args.n_down, "n_blocks": args.n_blocks, "local_ngf": args.local_ngf,
            "n_blocks_local": args.n_blocks_local, "dtype": args.dtype, "channels_last": args.channels_last}


def run_train(args) -> dict:
    step = TrainStep(args)
    rng = np.random.default_rng(0)
    batch = [to_torch(rng.uniform(-1, 1, (args.batch, args.height, args.width, 3)).astype(np.float32), args)
             for _ in range(4)]
    if args.channels_last:
        for m in (step.g, step.d, step.vgg):
            if m is not None:
                m.to(memory_format=torch.channels_last)
    one = synced(lambda: step(*batch), args.device)
    t0 = time.perf_counter()
    one()
    first_s = time.perf_counter() - t0
    one()
    times = call_seconds(one, args.steps)
    step_s = float(np.median(times))
    memory = peak_memory(args.device)
    flops = counted_flops(one) if args.flops else None
    peak = matmul_peak(args.device, args.dtype) if args.flops else None
    return {
        "shape": {"batch": args.batch, **shape_fields(args), "ndf": args.ndf, "num_d": args.num_d,
                  "n_layers_d": args.n_layers_d, "perceptual": args.perceptual},
        "g_params": param_count(step.g), "d_params": param_count(step.d),
        "vgg_params": param_count(step.vgg) if step.vgg is not None else 0,
        "first_step_s": round(first_s, 2), "steps_timed": len(times),
        "step_s_median": round(step_s, 4), "step_s_min": round(min(times), 4),
        "images_per_s": round(2 * args.batch / step_s, 3), "pairs_per_s": round(args.batch / step_s, 3),
        **flop_fields(flops, step_s, peak, "step"), **memory,
    }


def run_infer(args) -> dict:
    g = make_generator(args).to(args.device).eval()
    if args.channels_last:
        g.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    # Stick figures in [-1, 1]; their values do not change the work, so uniform noise stands in.
    labels = to_torch(rng.uniform(-1, 1, (args.frames, args.height, args.width, 3)).astype(np.float32), args)
    cast = autocast(args)

    def render_all():
        prev = torch.zeros_like(labels[:1])
        outputs = []
        with torch.no_grad(), cast:
            for t in range(args.frames):
                prev = g(torch.cat([labels[t:t + 1], prev.to(labels.dtype)], 1))
                outputs.append(prev)
        return outputs

    def render_one():
        with torch.no_grad(), cast:
            return g(torch.cat([labels[:1], torch.zeros_like(labels[:1])], 1))

    render_all, render_one = synced(render_all, args.device), synced(render_one, args.device)
    t0 = time.perf_counter()
    render_one()
    first_s = time.perf_counter() - t0
    render_all()  # warm
    times = call_seconds(render_all, args.repeats)
    seconds = float(np.median(times))
    memory = peak_memory(args.device)
    flops = counted_flops(render_one) if args.flops else None
    peak = matmul_peak(args.device, args.dtype) if args.flops else None
    n = args.frames
    return {
        "shape": {**shape_fields(args), "frames": n, "face": False},
        "g_params": param_count(g), "first_frame_s": round(first_s, 3), "repeats": len(times),
        "per_frame": {"frames_per_s": round(n / seconds, 3), "seconds_median": round(seconds, 3),
                      "seconds_per_frame": round(seconds / n, 5), "frames_per_s_best": round(n / min(times), 3)},
        **flop_fields(flops, seconds / n, peak, "frame"), **memory,
    }


def flop_fields(flops, seconds: float, peak: dict | None, what: str) -> dict:
    if flops is None or peak is None:
        return {f"flops_per_{what}": None, "mfu": None}
    return {f"flops_per_{what}": flops, "achieved_gflops_per_s": round(flops / seconds / 1e9, 2),
            "mfu": round(flops / seconds / peak["flops_per_s"], 4), "matmul_peak_gflops_per_s": peak["gflops_per_s"],
            "matmul_peak_method": peak["method"],
            "flops_source": "torch.utils.flop_counter.FlopCounterMode (convolutions and matmuls only)"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("train", "infer"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--n_down", type=int, default=3)
    parser.add_argument("--n_blocks", type=int, default=3)
    parser.add_argument("--ndf", type=int, default=16)
    parser.add_argument("--num_d", type=int, default=2)
    parser.add_argument("--n_layers_d", type=int, default=3)
    parser.add_argument("--generator", choices=("global", "local"), default="global",
                        help="local: pix2pixHD's LocalEnhancer around the global generator (--ngf is its global ngf)")
    parser.add_argument("--local_ngf", type=int, default=32)
    parser.add_argument("--n_blocks_local", type=int, default=3)
    parser.add_argument("--perceptual", choices=("vgg16", "vgg19", "none"), default="vgg16")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (| cuda:N)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: torch.autocast around the forward passes")
    parser.add_argument("--lambda_feat", type=float, default=10.0)
    parser.add_argument("--lambda_vgg", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=10, help="timed train steps (after 2 warm-up steps)")
    parser.add_argument("--frames", type=int, default=64, help="frames per timed inference run")
    parser.add_argument("--repeats", type=int, default=3, help="timed inference runs (after a warm-up run)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0: the CPUs we may run on")
    parser.add_argument("--channels_last", action="store_true", help="NHWC memory format (torch.channels_last)")
    parser.add_argument("--compare_json", default=None,
                        help="a JAX benchmark's JSON output for the same sizes: adds its parameter counts "
                             "(and whether they match) and the JAX / torch speed ratio")
    parser.add_argument("--one_line", dest="indent", action="store_false", help="print the JSON on one line")
    parser.add_argument("--noflops", dest="flops", action="store_false",
                        help="skip the FLOP count and the matmul peak (both after the timing)")
    args = parser.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = torch.device(args.device).type == "cuda"
    if cuda:  # the fastest eager settings: cuDNN's autotuned algorithms, TF32 as XLA's default float32 precision
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with device_lock(os.environ.get(LOCK_ENV)):  # benchmarks/device_check.py: one process on the device at a time
        result = run_train(args) if args.what == "train" else run_infer(args)
    print(json.dumps({
        "benchmark": f"torch_reference {args.what}", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "mkldnn": torch.backends.mkldnn.is_available(), **result, **jax_comparison(args.compare_json, result),
    }, indent=2 if args.indent else None))


if __name__ == "__main__":
    main()
