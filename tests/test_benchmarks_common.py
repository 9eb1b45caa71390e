"""benchmarks/common.py: XLA FLOP counts, MFU arithmetic and the memory/peak helpers (no speed asserted)."""

import time

import jax
import jax.numpy as jnp
import pytest

from benchmarks import common


def test_compiled_flops_of_a_matmul_is_two_m_n_k():
    m, k, n = 24, 40, 8
    a, b = jnp.ones((m, k)), jnp.ones((k, n))
    assert common.compiled_flops(jax.jit(jnp.matmul), a, b) == 2 * m * n * k
    assert common.compiled_flops(jnp.matmul, a, b) == 2 * m * n * k  # plain functions are jitted


def test_cost_analysis_shapes_are_both_accepted():
    assert common._cost_dict([{"flops": 3.0}]) == {"flops": 3.0}  # older jax: a list of one dict
    assert common._cost_dict({"flops": 3.0}) == {"flops": 3.0}
    assert common._cost_dict(None) == {}


def test_mfu_and_efficiency_fields():
    assert common.mfu(2e9, 0.5, 8e9) == pytest.approx(0.5)
    assert common.mfu(None, 0.5, 8e9) is None
    peak = {"flops_per_s": 8e9, "gflops_per_s": 8.0, "method": "m"}
    fields = common.efficiency(2e9, 0.5, peak, "step")
    assert fields["flops_per_step"] == 2e9 and fields["mfu"] == 0.5 and fields["achieved_gflops_per_s"] == 4.0


def test_matmul_peak_and_peak_memory_report_positive_numbers():
    peak = common.matmul_peak_flops(sizes=(64,), repeats=1)
    assert peak["flops_per_s"] > 0 and "2 n^3" in peak["method"] and peak["dtype"] == "float32"
    assert common.matmul_peak_flops(sizes=(64,), repeats=1) is peak  # cached per process
    memory = common.peak_memory()
    assert memory["peak_memory_bytes"] > 0 and memory["peak_memory_source"]


def test_call_seconds_times_each_call():
    calls = []
    times = common.call_seconds(lambda: calls.append(time.sleep(0.01)), 3)
    assert len(calls) == 3 and len(times) == 3
    assert all(t >= 0.01 for t in times)  # each call's own duration, not the loop's total or its start
