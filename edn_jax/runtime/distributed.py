"""Joining JAX's distributed runtime when, and only when, this is a multi-process run.

``maybe_initialize()`` must run before anything touches a JAX backend (``jax.devices()``,
a computation, ``jax.device_put``...). A plain single-host run needs nothing and never
waits: the runtime is started only when the environment says there are other processes.

Environment variables (all optional):

  EDN_DISTRIBUTED          auto (default): decide from the environment, as below;
                           off: never start the distributed runtime;
                           on: always call jax.distributed.initialize() and let JAX
                           auto-detect the cluster (e.g. Kubernetes, mpi4py).
  EDN_COORDINATOR_ADDRESS  host:port of process 0, reachable from every process; process 0
                           listens on that port (on all interfaces).
  EDN_NUM_PROCESSES        how many processes take part (all hosts together).
  EDN_PROCESS_ID           this process's id, 0 .. EDN_NUM_PROCESSES - 1 (0 runs the coordinator).
                           The three above are given together or not at all; they win over
                           any detected cluster. EDN_NUM_PROCESSES=1 means a single process.
  EDN_INIT_TIMEOUT         seconds to wait for the coordinator and all processes (default 300).

With EDN_DISTRIBUTED=auto and no EDN_* process variables, the runtime is started only for:
  - a Cloud TPU VM pod slice with more than one worker (the TPU VM metadata lists the
    workers; on GKE TPU_WORKER_HOSTNAMES), or a multislice job (MEGASCALE_NUM_SLICES > 1);
  - a SLURM step with more than one task (SLURM_NTASKS > 1 inside ``srun``);
  - an Open MPI job with more than one rank (OMPI_COMM_WORLD_SIZE > 1 under ``mpirun``).
JAX then finds the coordinator, process count and id itself. A single TPU VM (e.g. v4-8),
a one-task SLURM allocation, a workstation or a GPU box start nothing.

On CPU (JAX_PLATFORMS=cpu) processes exchange collectives through gloo.

Call it first thing in the entry point (``edn_jax.main.main``, before ``run``), inside the
``try`` that prints EdnError as one line. Everything after it is written for many processes
already: ``jax.devices()`` is global, ``jax.process_index()`` says which process this is.

Known limit: once the processes are connecting, JAX itself aborts the process (not a Python
exception) if some process never joins within the timeout; the line printed before joining
says what it was waiting for.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Mapping

import jax
from jax._src import xla_bridge

from edn_jax.errors import EdnError

DEFAULT_TIMEOUT_S = 300
_PROCESS_VARS = ("EDN_COORDINATOR_ADDRESS", "EDN_NUM_PROCESSES", "EDN_PROCESS_ID")
_FIX_VARS = "set EDN_COORDINATOR_ADDRESS=host:port, EDN_NUM_PROCESSES and EDN_PROCESS_ID together (or none of them)"
_METADATA_URL = "http://{host}/computeMetadata/v1/instance/attributes/{key}"

_result: bool | None = None  # what the first successful call decided


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to join: a description for messages and the arguments of jax.distributed.initialize."""

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    cluster_detection_method: str | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S


# ----------------------------------------------------------------------------- deciding


def _int(env: Mapping[str, str], name: str, low: int, high: int | None = None) -> int:
    raw = env[name].strip()
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise EdnError(f"{name}={env[name]!r} is not an integer {bounds}", f"set {name} to an integer {bounds}")
    return value


def _split_address(address: str, name: str = "EDN_COORDINATOR_ADDRESS") -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdnError(f"{name}={address!r} is not host:port", f"set {name} to e.g. 10.0.0.2:8476 (process 0's host)")
    return host, int(port)


def _count(text: str | None) -> int:
    return len([t for t in (text or "").split(",") if t.strip()])


def _on_cloud_tpu_vm() -> bool:
    """Whether JAX found TPU chips and libtpu on this host (read when ``import jax`` ran; touches no backend)."""
    try:  # a private module (where jax keeps what it found at import), so it may move between releases
        from jax._src import cloud_tpu_init
    except ImportError:  # pragma: no cover - private module moved
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def _tpu_metadata(key: str, timeout_s: float = 5.0) -> str | None:
    """A Cloud TPU VM metadata attribute, or None when the metadata server does not answer."""
    host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(_METADATA_URL.format(host=host, key=key), headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read().decode()
    except (OSError, ValueError):
        return None


def _tpu_worker_count(env: Mapping[str, str]) -> int | None:
    """Hosts in this TPU slice: GKE's TPU_WORKER_HOSTNAMES, else the TPU VM metadata; None if unknown."""
    if env.get("TPU_WORKER_HOSTNAMES"):
        return _count(env["TPU_WORKER_HOSTNAMES"])
    if env.get("TPU_SKIP_MDS_QUERY") is not None:
        return None
    endpoints = _tpu_metadata("worker-network-endpoints")
    return None if endpoints is None else _count(endpoints)


def plan(env: Mapping[str, str] | None = None) -> Plan | None:
    """The multi-process setup the environment asks for, or None for a single process.

    Reads only environment variables (and, on a Cloud TPU VM, its metadata server);
    starts nothing. Raises EdnError on a bad value.
    """
    env = os.environ if env is None else env
    mode = env.get("EDN_DISTRIBUTED", "auto").strip().lower() or "auto"
    if mode not in ("auto", "on", "off", "1", "0", "true", "false"):
        raise EdnError(f"EDN_DISTRIBUTED={env['EDN_DISTRIBUTED']!r} is not auto, on or off",
                       "unset it (auto), or set it to on or off")
    mode = {"1": "on", "true": "on", "0": "off", "false": "off"}.get(mode, mode)
    if mode == "off":
        return None
    timeout = _int(env, "EDN_INIT_TIMEOUT", 1) if env.get("EDN_INIT_TIMEOUT", "").strip() else DEFAULT_TIMEOUT_S

    given = [name for name in _PROCESS_VARS if env.get(name, "").strip()]
    if given:
        missing = [name for name in _PROCESS_VARS if name not in given]
        if missing:
            raise EdnError(f"{', '.join(given)} given without {', '.join(missing)}", _FIX_VARS)
        num = _int(env, "EDN_NUM_PROCESSES", 1)
        pid = _int(env, "EDN_PROCESS_ID", 0, num - 1)
        address = env["EDN_COORDINATOR_ADDRESS"].strip()
        _split_address(address)
        if num == 1:
            return None
        return Plan("EDN_* variables", address, num, pid, "deactivate", timeout)

    if mode == "on":
        return Plan("EDN_DISTRIBUTED=on (JAX's cluster auto-detection)", timeout_s=timeout)

    if env.get("MEGASCALE_NUM_SLICES", "").strip() and _int(env, "MEGASCALE_NUM_SLICES", 1) > 1:
        method = "gketpu" if env.get("TPU_WORKER_HOSTNAMES") else "gcetpu"
        return Plan(f"TPU multislice ({env['MEGASCALE_NUM_SLICES'].strip()} slices)",
                    cluster_detection_method=method, timeout_s=timeout)
    if _on_cloud_tpu_vm():
        workers = _tpu_worker_count(env)
        if workers is not None and workers > 1:
            method = "gketpu" if env.get("TPU_WORKER_HOSTNAMES") else "gcetpu"
            return Plan(f"Cloud TPU slice with {workers} workers", cluster_detection_method=method, timeout_s=timeout)
        return None  # one TPU host, or metadata unknown: libtpu still connects a pod's hosts by itself
    if env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_NODELIST") and env.get("SLURM_NTASKS", "").strip():
        if _int(env, "SLURM_NTASKS", 1) > 1:
            return Plan(f"SLURM step with {env['SLURM_NTASKS'].strip()} tasks", cluster_detection_method="slurm",
                        timeout_s=timeout)
    if env.get("OMPI_MCA_orte_hnp_uri") and env.get("OMPI_COMM_WORLD_SIZE", "").strip():
        if _int(env, "OMPI_COMM_WORLD_SIZE", 1) > 1:
            return Plan(f"Open MPI job with {env['OMPI_COMM_WORLD_SIZE'].strip()} ranks",
                        cluster_detection_method="ompi", timeout_s=timeout)
    return None


# ----------------------------------------------------------------------------- joining


def _backends_started() -> bool:
    return xla_bridge.backends_are_initialized()


def _check_port_free(address: str, env: Mapping[str, str]) -> None:
    """Process 0 serves the coordinator; JAX crashes (not raises) when its port is taken, so look first."""
    bind = env.get("JAX_COORDINATOR_BIND_ADDRESS")
    port = _split_address(bind, "JAX_COORDINATOR_BIND_ADDRESS")[1] if bind else _split_address(address)[1]
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise EdnError(f"port {port} of the coordinator ({address}) is already in use on this host, "
                               "where process 0 must listen", "pick a free port in EDN_COORDINATOR_ADDRESS on every "
                               "process, or stop the job that holds it")
        finally:
            sock.close()


def _wait_for_coordinator(address: str, process_id: int, deadline: float) -> None:
    """Processes > 0: wait until process 0's coordinator accepts connections (JAX would abort, not raise)."""
    host, port = _split_address(address)
    last = "no attempt"
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as e:
            last = f"{type(e).__name__}: {e.strerror or e}"
        if time.monotonic() >= deadline:
            raise EdnError(f"process {process_id} could not reach the coordinator at {address} before the "
                           f"timeout ({last})", "start process 0 too, check EDN_COORDINATOR_ADDRESS (process 0's "
                           "host:port) and that the port is open between hosts, or raise EDN_INIT_TIMEOUT")
        time.sleep(0.25)


def maybe_initialize(env: Mapping[str, str] | None = None) -> bool:
    """Start ``jax.distributed`` if this is a multi-process run; True when it is (now) running.

    Idempotent: later calls return the first answer. Call it first thing in the program,
    before any JAX backend starts (see the module docstring for the environment variables).
    Raises EdnError on bad variables, an unreachable coordinator or a port already in use.
    """
    global _result
    if _result is not None:
        return _result
    if jax.distributed.is_initialized():  # someone else already joined
        _result = True
        return True
    env = os.environ if env is None else env
    p = plan(env)
    if p is None:
        _result = False
        return False
    if _backends_started():
        raise EdnError(f"the distributed runtime ({p.source}) must start before JAX's backend, but the backend "
                       "is already running", "call edn_jax.runtime.distributed.maybe_initialize() before any jax.devices(), "
                       "device_put or computation")
    deadline = time.monotonic() + p.timeout_s
    if p.coordinator_address is not None:
        if p.process_id == 0:
            _check_port_free(p.coordinator_address, env)
        else:
            _wait_for_coordinator(p.coordinator_address, p.process_id, deadline)
    if env.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    who = "" if p.process_id is None else f" as process {p.process_id} of {p.num_processes}"
    where = "" if p.coordinator_address is None else f" at {p.coordinator_address}"
    print(f"[edn_jax] joining the distributed runtime{where}{who} ({p.source}); waiting up to {p.timeout_s} s "
          "for every process (EDN_INIT_TIMEOUT)", file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(
            coordinator_address=p.coordinator_address, num_processes=p.num_processes, process_id=p.process_id,
            cluster_detection_method=p.cluster_detection_method,
            initialization_timeout=max(1, int(deadline - time.monotonic())))
    except (ValueError, TypeError, RuntimeError, OSError, KeyError) as e:
        try:
            jax.distributed.shutdown()
        except Exception:  # noqa: BLE001 - best effort; the original error is what matters
            pass
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise EdnError(f"cannot start the distributed runtime ({p.source}): {detail}",
                       f"{_FIX_VARS}, or set EDN_DISTRIBUTED=off for a single process")
    _result = True
    return True
