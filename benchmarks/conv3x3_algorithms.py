"""Would a FLOP-saving convolution algorithm speed up the perceptual loss? Winograd vs XLA's conv.

The train step at configs/cpu.py shapes is about 90% VGG16 3x3 convolutions, run near the
measured matmul peak (benchmarks/RESULTS.md), so only an algorithm that does fewer multiplies
could make it much faster. Winograd's minimal filtering F(m x m, 3 x 3) computes an m x m output
tile from an (m + 2)^2 input tile with (m + 2)^2 multiplies per channel pair instead of 9 m^2:
2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3). The price is the transforms of the input
and output tiles, which are memory-bound elementwise work.

This script times, for every conv of VGG16 up to conv5_1 at the given batch and image size, the
forward pass of ``lax.conv_general_dilated`` (what ``edn_jax.models.vgg.VGG`` runs) against
Winograd F(2x2, 3x3) and F(4x4, 3x3) written in JAX (transforms as strided slices and sums, one
matmul per tile position), checks each against the plain conv (max error relative to the
output's largest value) and prints one JSON object: per layer, and the sum over the layers of
the plain conv vs the best algorithm chosen per layer. Only the forward pass is timed; the input
gradient of a 3x3 conv is a 3x3 conv of the same size, so it has the same profile.

  .venv/bin/python -m benchmarks.conv3x3_algorithms                 # batch 8 at 256x256, as the train step's VGG
"""

from __future__ import annotations

import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_BATCH = flags.DEFINE_integer("batch", 8, "Images per call (the train step runs VGG on 8 generated and 8 real).")
_SIZE = flags.DEFINE_integer("size", 256, "Image height and width.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per algorithm and layer; the median is reported.")
_LAST = flags.DEFINE_string("last", "conv5_1", "Deepest VGG16 conv timed (pix2pixHD's loss stops at relu5_1).")

# Lavin & Gray (2016): Y = A^T [(G g G^T) * (B^T d B)] A, per (m+2) x (m+2) input tile d.
WINOGRAD = {
    "F2x2_3x3": {
        "m": 2,
        "BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        "G": [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
        "AT": [[1, 1, 1, 0], [0, 1, -1, -1]],
    },
    "F4x4_3x3": {
        "m": 4,
        "BT": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        "G": [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    },
}


def _combine(coefficients, arrays):
    """sum_i c_i * a_i over the non-zero c_i (so XLA fuses it into one elementwise loop)."""
    out = None
    for c, a in zip(coefficients, arrays):
        if c == 0:
            continue
        term = a if c == 1 else -a if c == -1 else float(c) * a
        out = term if out is None else out + term
    return out


def _tile_taps(x, axis: int, m: int, tiles: int):
    """The m + 2 arrays whose j-th entry along ``axis`` is x[j * m + i] (i = 0 .. m + 1), from
    contiguous slices of x reshaped to (tiles + 1, m) along that axis."""
    shape = list(x.shape)
    grouped = x.reshape(shape[:axis] + [tiles + 1, m] + shape[axis + 1:])
    taps = []
    for i in range(m + 2):
        block, offset = divmod(i, m)
        index = [slice(None)] * grouped.ndim
        index[axis], index[axis + 1] = slice(block, block + tiles), offset
        taps.append(grouped[tuple(index)])
    return taps


def winograd_conv3x3(x, kernel, algorithm: dict):
    """SAME-padded stride-1 3x3 NHWC conv (HWIO kernel) by Winograd minimal filtering."""
    import jax.numpy as jnp

    m = algorithm["m"]
    a = m + 2
    bt, g, at = (np.asarray(algorithm[k], np.float32) for k in ("BT", "G", "AT"))
    n, h, w, c = x.shape
    k_out = kernel.shape[-1]
    th, tw = -(-h // m), -(-w // m)
    padded = jnp.pad(x, ((0, 0), (1, (th + 1) * m - h - 1), (1, (tw + 1) * m - w - 1), (0, 0)))
    rows = _tile_taps(padded, 1, m, th)
    along_h = [_combine(bt[r], rows) for r in range(a)]
    u = jnp.einsum("ri,ijck,sj->rsck", g, kernel, g)
    products = []
    for r in range(a):
        cols = _tile_taps(along_h[r], 2, m, tw)
        for s in range(a):
            products.append(jnp.dot(_combine(bt[s], cols).reshape(n * th * tw, c), u[r, s]))
    partial = [[_combine(at[p], [products[r * a + s] for r in range(a)]) for s in range(a)] for p in range(m)]
    tiles = jnp.stack([jnp.stack([_combine(at[q], partial[p]) for q in range(m)], axis=1) for p in range(m)])
    y = tiles.reshape(m, n, th, tw, m, k_out).transpose(1, 2, 0, 3, 4, 5).reshape(n, th * m, tw * m, k_out)
    return y[:, :h, :w]


def main(argv) -> None:
    del argv
    import jax
    import jax.numpy as jnp
    from jax import lax

    from benchmarks import common
    from edn_jax.models import vgg

    def direct(x, kernel):
        return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    algorithms = {"direct": jax.jit(direct)}
    for name, spec in WINOGRAD.items():
        algorithms[name] = jax.jit(lambda x, kernel, spec=spec: winograd_conv3x3(x, kernel, spec))

    def seconds(fn, *args) -> float:
        fn(*args).block_until_ready()  # compile and warm
        return float(np.median(common.call_seconds(lambda: fn(*args).block_until_ready(), _REPEATS.value)))

    names = [name for name, *_ in vgg.conv_layers("vgg16")]
    if _LAST.value not in names:
        raise app.UsageError(f"--last={_LAST.value!r} is no VGG16 conv; use one of {', '.join(names)}")
    rng = np.random.default_rng(0)
    layers, size = [], _SIZE.value
    totals = {name: 0.0 for name in algorithms} | {"best": 0.0}
    for name, cin, cout, pool in vgg.conv_layers("vgg16"):
        size //= 2 if pool else 1
        x = jnp.asarray(rng.standard_normal((_BATCH.value, size, size, cin), np.float32))
        kernel = jnp.asarray(rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2 / (9 * cin)))
        reference = direct(x, kernel)
        scale = float(jnp.max(jnp.abs(reference)))
        entry = {"layer": name, "input_hwc": [size, size, cin], "out_channels": cout,
                 "gflop": round(2 * 9 * cin * cout * size * size * _BATCH.value / 1e9, 2)}
        for algo, fn in algorithms.items():
            s = seconds(fn, x, kernel)
            entry[f"{algo}_ms"] = round(s * 1e3, 1)
            totals[algo] += s
            if algo != "direct":
                entry[f"{algo}_max_rel_error"] = float(f"{float(jnp.max(jnp.abs(fn(x, kernel) - reference))) / scale:.2e}")
        best = min(algorithms, key=lambda a: entry[f"{a}_ms"])
        entry["best"] = best
        totals["best"] += entry[f"{best}_ms"] / 1e3
        layers.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)  # progress; stdout is the one JSON object
        if name == _LAST.value:
            break
    print(json.dumps({
        "benchmark": "conv3x3_algorithms", "batch": _BATCH.value, "image_size": _SIZE.value,
        "cpu_count": os.cpu_count(), "threads": common.thread_count(),
        "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
        "layers": layers,
        "total_forward_ms": {k: round(v * 1e3, 1) for k, v in totals.items()},
        "best_per_layer_speedup_over_direct": round(totals["direct"] / totals["best"], 3),
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
