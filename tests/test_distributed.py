"""Multi-process training: 2 processes x 2 CPU devices == 1 process x 1 device; when to join the runtime."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multihost_worker
from helpers import REPO, assert_facts
from edn_jax.errors import EdnError
from edn_jax.runtime import distributed

# Both sides compile at LLVM -O1: a third less compile time than the default -O2, same numerics to ~1e-6
# here. (Not -O0: its single-process results drift from -O1/-O2 by percents within 3 GAN steps.)
_XLA = "--xla_backend_optimization_level=1 --xla_force_host_platform_device_count={}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDN_", "SLURM_", "OMPI_", "MEGASCALE_"))}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=_XLA.format(devices), **extra)
    return env


def _finish(procs: dict, timeout_s: float) -> None:
    """Wait for every worker; on a failure or timeout stop the others and show the failing one's log."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(proc.poll() is None for proc, _ in procs.values()):
            for name, (proc, log) in procs.items():
                if proc.poll() not in (None, 0):  # one died: the others would wait for it until their timeout
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                running = [name for name, (proc, _) in procs.items() if proc.poll() is None]
                name = running[0]
                pytest.fail(f"{', '.join(running)} did not finish within {timeout_s} s; {name}'s log:\n"
                            f"{procs[name][1].read_text()[-3000:]}")
            time.sleep(0.1)
        for name, (proc, log) in procs.items():
            if proc.returncode != 0:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    """3 steps on random global batches (each process feeding its own rows), then 2 on the input
    pipeline's batches (each process reading its own share of a TFDS dataset): the final state of
    2 processes x 2 devices equals 1 process x 1 device, and both processes agree exactly."""
    from edn_jax.data import build

    dataset_dir = build.make_builder(multihost_worker.tiny_config(), str(tmp_path / "data"), size=(32, 32)).data_dir
    worker = [sys.executable, str(REPO / "tests" / "multihost_worker.py")]
    address = f"127.0.0.1:{_free_port()}"
    procs = {}
    for name, out, env in [
        ("process 0", "multi", _worker_env(2, EDN_COORDINATOR_ADDRESS=address, EDN_NUM_PROCESSES="2",
                                           EDN_PROCESS_ID="0", EDN_INIT_TIMEOUT="120")),
        ("process 1", "multi", _worker_env(2, EDN_COORDINATOR_ADDRESS=address, EDN_NUM_PROCESSES="2",
                                           EDN_PROCESS_ID="1", EDN_INIT_TIMEOUT="120")),
        ("single process", "single", _worker_env(1, EDN_DISTRIBUTED="off")),
    ]:
        (tmp_path / out).mkdir(exist_ok=True)
        log = tmp_path / f"{name.replace(' ', '_')}.log"
        with open(log, "w") as f:
            procs[name] = (subprocess.Popen(worker + [str(tmp_path / out), str(dataset_dir)], cwd=REPO, env=env,
                                            stdout=f, stderr=subprocess.STDOUT), log)
    try:  # the workers wait for the dataset only after compiling; build it meanwhile
        build.make_builder(multihost_worker.tiny_config(), str(tmp_path / "data"), size=(32, 32)).download_and_prepare()
    finally:
        _finish(procs, timeout_s=300)

    single = dict(np.load(tmp_path / "single" / "process_0.npz"))
    p0, p1 = (dict(np.load(tmp_path / "multi" / f"process_{i}.npz")) for i in (0, 1))
    assert list(single.pop("devices")) == [1, 1, 1, 0]
    assert list(p0.pop("devices")) == [4, 2, 2, 0] and list(p1.pop("devices")) == [4, 2, 2, 1]
    assert sorted(p0) == sorted(p1) == sorted(single)
    batches = [k for k in single if k.startswith("batch")]
    assert len(batches) == 4 * multihost_worker.PIPELINE_STEPS
    assert any(k.startswith("final/state") and "g_params" in k for k in single)
    for key in p0:  # every process holds the same replicated state
        np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
    for key in batches:  # the input pipeline's global batch does not depend on the process count
        np.testing.assert_array_equal(p0[key], single[key], err_msg=key)
    assert int(p0["final/state.step"]) == multihost_worker.RANDOM_STEPS + multihost_worker.PIPELINE_STEPS
    for key in p0:
        if not key.startswith("batch"):
            np.testing.assert_allclose(np.asarray(p0[key], np.float64), np.asarray(single[key], np.float64),
                                       rtol=2e-4, atol=2e-5, err_msg=key)


# ----------------------------------------------------------------------------- when to join


SINGLE_HOST_ENVS = [
    {},
    {"EDN_DISTRIBUTED": "auto"},
    {"EDN_COORDINATOR_ADDRESS": "10.0.0.2:8476", "EDN_NUM_PROCESSES": "1", "EDN_PROCESS_ID": "0"},
    {"EDN_DISTRIBUTED": "off", "EDN_COORDINATOR_ADDRESS": "10.0.0.2:8476", "EDN_NUM_PROCESSES": "4",
     "EDN_PROCESS_ID": "1"},
    {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_STEP_NODELIST": "node1"},  # one task
    {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"},  # the sbatch script itself, outside srun
    {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "1"},
    {"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
]


@pytest.mark.parametrize("env", SINGLE_HOST_ENVS)
def test_single_process_environments_start_nothing(env, monkeypatch):
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
    assert distributed.plan(env) is None


@pytest.mark.parametrize("env,source,method", [
    ({"EDN_COORDINATOR_ADDRESS": "10.0.0.2:8476", "EDN_NUM_PROCESSES": "4", "EDN_PROCESS_ID": "3"},
     "EDN_*", "deactivate"),
    ({"EDN_DISTRIBUTED": "on"}, "auto-detection", None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_NODELIST": "node[1-4]"}, "SLURM", "slurm"),
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI", "ompi"),
    ({"MEGASCALE_NUM_SLICES": "2"}, "multislice", "gcetpu"),
])
def test_multi_process_environments_are_detected(env, source, method, monkeypatch):
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)
    p = distributed.plan(dict(env, EDN_INIT_TIMEOUT="42"))
    assert p is not None and source in p.source and p.cluster_detection_method == method and p.timeout_s == 42
    if method == "deactivate":
        assert (p.coordinator_address, p.num_processes, p.process_id) == ("10.0.0.2:8476", 4, 3)


@pytest.mark.parametrize("endpoints,gke,expected", [
    ("w-0:8470:10.0.0.1", None, None),                                    # v4-8: one worker
    ("w-0:8470:10.0.0.1,w-1:8470:10.0.0.2", None, "gcetpu"),              # v4-16 pod slice
    (None, None, None),                                                   # metadata unreachable: libtpu copes
    (None, "host-0,host-1,host-2,host-3", "gketpu"),
])
def test_cloud_tpu_pod_slices_are_detected(endpoints, gke, expected, monkeypatch):
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: True)
    monkeypatch.setattr(distributed, "_tpu_metadata", lambda key: endpoints)
    p = distributed.plan({"TPU_WORKER_HOSTNAMES": gke} if gke else {})
    assert (p and p.cluster_detection_method) == expected


@pytest.mark.parametrize("env,fragment", [
    ({"EDN_COORDINATOR_ADDRESS": "10.0.0.2:8476"}, "without EDN_NUM_PROCESSES, EDN_PROCESS_ID"),
    ({"EDN_COORDINATOR_ADDRESS": "10.0.0.2", "EDN_NUM_PROCESSES": "2", "EDN_PROCESS_ID": "0"}, "not host:port"),
    ({"EDN_COORDINATOR_ADDRESS": "h:99999", "EDN_NUM_PROCESSES": "2", "EDN_PROCESS_ID": "0"}, "not host:port"),
    ({"EDN_COORDINATOR_ADDRESS": "h:1", "EDN_NUM_PROCESSES": "two", "EDN_PROCESS_ID": "0"}, "EDN_NUM_PROCESSES='two'"),
    ({"EDN_COORDINATOR_ADDRESS": "h:1", "EDN_NUM_PROCESSES": "2", "EDN_PROCESS_ID": "2"}, r"in \[0, 1\]"),
    ({"EDN_DISTRIBUTED": "maybe"}, "EDN_DISTRIBUTED='maybe'"),
    ({"EDN_DISTRIBUTED": "on", "EDN_INIT_TIMEOUT": "0"}, "EDN_INIT_TIMEOUT"),
])
def test_bad_variables_are_one_line_errors(env, fragment):
    with pytest.raises(EdnError, match=fragment) as info:
        distributed.plan(env)
    assert "\n" not in str(info.value) and "; " in str(info.value)  # problem; fix


@pytest.fixture
def fresh(monkeypatch):
    """maybe_initialize as in a new process whose backend has not started; jax.distributed must not be called."""
    import jax

    monkeypatch.setattr(distributed, "_result", None)
    monkeypatch.setattr(distributed, "_backends_started", lambda: False)
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)

    def forbidden(*args, **kwargs):
        raise AssertionError("jax.distributed.initialize must not be called")

    monkeypatch.setattr(jax.distributed, "initialize", forbidden)


def test_single_host_is_a_no_op_and_idempotent(fresh):
    assert distributed.maybe_initialize({}) is False
    multi = {"EDN_COORDINATOR_ADDRESS": "127.0.0.1:1", "EDN_NUM_PROCESSES": "2", "EDN_PROCESS_ID": "1"}
    assert distributed.maybe_initialize(multi) is False  # the first answer stands


def test_unreachable_coordinator_is_a_clear_error(fresh):
    env = {"EDN_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "EDN_NUM_PROCESSES": "2", "EDN_PROCESS_ID": "1",
           "EDN_INIT_TIMEOUT": "1"}
    start = time.monotonic()
    with pytest.raises(EdnError) as caught:
        distributed.maybe_initialize(env)
    assert_facts(caught.value, "process 1", "coordinator", env["EDN_COORDINATOR_ADDRESS"], "start process 0")
    assert time.monotonic() - start < 10


def test_coordinator_port_in_use_is_a_clear_error(fresh):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        env = {"EDN_COORDINATOR_ADDRESS": f"127.0.0.1:{busy.getsockname()[1]}", "EDN_NUM_PROCESSES": "2",
               "EDN_PROCESS_ID": "0"}
        with pytest.raises(EdnError, match="already in use on this host"):
            distributed.maybe_initialize(env)


def test_joining_after_the_backend_started_is_refused(fresh, monkeypatch):
    monkeypatch.setattr(distributed, "_backends_started", lambda: True)
    with pytest.raises(EdnError, match="must start before JAX's backend"):
        distributed.maybe_initialize({"EDN_DISTRIBUTED": "on"})
