"""Helpers shared by the benchmark scripts: the backend's measured matmul peak, XLA's FLOP
count of a compiled function, model FLOPs utilisation (MFU) and peak memory.

MFU here is ``flops_per_call / seconds_per_call / peak``, where the FLOPs are what XLA's
cost analysis counts for the compiled program (convolutions and dots at 2 FLOPs per
multiply-add, plus the elementwise work) and ``peak`` is the best rate this process
measured for a jitted square float32 matmul on the same backend, i.e. what this machine
actually sustains under its current load, not a datasheet figure.
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from typing import Any, Callable


def _cost_dict(cost: Any) -> dict:
    """``cost_analysis()`` gives a dict in current jax (0.4.3x+ incl. 0.7), a one-dict list in older ones."""
    if cost is None:
        return {}
    if isinstance(cost, (list, tuple)):
        return dict(cost[0]) if cost else {}
    return dict(cost)


def compiled_flops(fn: Callable, *args, **kwargs) -> float | None:
    """FLOPs of one call of ``fn(*args, **kwargs)`` from XLA's cost analysis of the compiled program.

    ``fn`` is a ``jax.jit``-wrapped function (anything with ``.lower``) or a plain one (it is
    jitted here). Note: XLA counts a ``while``/``scan`` body once, whatever its trip count, so
    measure a loop's body (one frame) rather than the loop. None when the backend gives no count.
    """
    import jax

    lowerable = fn if hasattr(fn, "lower") else jax.jit(fn)
    return flops_of(lowerable.lower(*args, **kwargs).compile())


def flops_of(compiled: Any) -> float | None:
    """FLOPs of one call of an already compiled program (``jit(f).lower(...).compile()``), or None."""
    flops = _cost_dict(compiled.cost_analysis()).get("flops")
    return None if flops is None or flops < 0 else float(flops)


def call_seconds(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls of ``fn()``. ``fn`` must return only when its
    work is done (``jax.block_until_ready`` for JAX; eager PyTorch on CPU already does)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


@functools.lru_cache(maxsize=None)
def _matmul_peak(dtype_name: str, sizes: tuple[int, ...], repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype = jnp.dtype(dtype_name)
    matmul = jax.jit(lambda a, b: a @ b)
    best = {"flops_per_s": 0.0}
    per_size = {}
    for n in sizes:
        rng = np.random.default_rng(n)
        a = jnp.asarray(rng.standard_normal((n, n), np.float32), dtype)
        b = jnp.asarray(rng.standard_normal((n, n), np.float32), dtype)
        matmul(a, b).block_until_ready()  # compile and warm
        times = call_seconds(lambda: matmul(a, b).block_until_ready(), repeats)
        rate = 2.0 * n ** 3 / min(times)
        per_size[n] = round(rate / 1e9, 1)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "n": n, "seconds": min(times)}
    return {"flops_per_s": best["flops_per_s"], "gflops_per_s": round(best["flops_per_s"] / 1e9, 1),
            "dtype": dtype.name, "backend": jax.default_backend(),
            "method": f"jitted {dtype.name} square matmul n in {list(sizes)}, best of {repeats} runs each "
                      f"(after a warm-up call), FLOPs = 2 n^3; the best rate over n (n={best['n']})",
            "gflops_per_s_by_n": per_size}


def matmul_peak_flops(dtype: Any = None, sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> dict:
    """The measured matmul peak of the current JAX backend: ``{"flops_per_s", "gflops_per_s", "method", ...}``.

    Jitted square ``n x n`` matmuls for each ``n`` in ``sizes``, best of ``repeats`` timed runs,
    FLOPs = 2 n^3, and the best rate over the sizes. Cached per process (per dtype and sizes).
    """
    import jax.numpy as jnp

    return _matmul_peak(jnp.dtype(jnp.float32 if dtype is None else dtype).name, tuple(sizes), repeats)


def mfu(flops_per_call: float | None, seconds_per_call: float, peak_flops_per_s: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak FLOP/s (None when either count is missing)."""
    if not flops_per_call or not peak_flops_per_s or seconds_per_call <= 0:
        return None
    return flops_per_call / seconds_per_call / peak_flops_per_s


def peak_rss_bytes() -> int:
    """The process's peak resident set size (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def device_memory_stats() -> dict:
    """The first local device's allocator statistics (``peak_bytes_in_use``, ``bytes_limit``, ...),
    or {} on backends that keep none (CPU)."""
    import jax

    try:
        return jax.local_devices()[0].memory_stats() or {}
    except Exception:  # backends without allocator statistics
        return {}


def peak_memory() -> dict:
    """Peak memory: the device allocator's ``peak_bytes_in_use`` when the backend reports it
    (GPU/TPU), else the process's peak RSS (CPU: device buffers live in host memory)."""
    stats = device_memory_stats()
    if stats.get("peak_bytes_in_use") is not None:
        peak, source = int(stats["peak_bytes_in_use"]), "device memory_stats()['peak_bytes_in_use']"
    else:
        peak, source = peak_rss_bytes(), "process peak RSS (resource.getrusage ru_maxrss; no device memory_stats)"
    return {"peak_memory_bytes": peak, "peak_memory_mib": round(peak / 2 ** 20, 1), "peak_memory_source": source}


def efficiency(flops_per_call: float | None, seconds_per_call: float, peak: dict, what: str) -> dict:
    """The JSON fields every benchmark prints about FLOPs: the count, the achieved rate, MFU and the peak."""
    value = mfu(flops_per_call, seconds_per_call, peak["flops_per_s"])
    return {
        f"flops_per_{what}": flops_per_call,
        "achieved_gflops_per_s": None if not flops_per_call else round(flops_per_call / seconds_per_call / 1e9, 2),
        "mfu": None if value is None else round(value, 4),
        "matmul_peak_gflops_per_s": peak["gflops_per_s"],
        "matmul_peak_method": peak["method"],
        "flops_source": "XLA cost_analysis()['flops'] of the compiled program",
    }


def thread_count() -> int:
    """Threads XLA's CPU backend uses for one computation: its intra-op pool is one thread per
    CPU this process may run on (the affinity mask), which is what a PyTorch comparison should use."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
