"""The device mesh and how arrays are laid out on it.

edn_jax trains data-parallel: one mesh axis, ``DATA_AXIS``, over every device of every
host. Batches are split along their leading axis over it; params, optimizer states and
the perceptual loss's weights are replicated. Everything that places arrays goes
through these helpers, so a model-parallel axis would be added here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A data-parallel mesh over ``devices`` (default: all devices of all hosts), in the order
    ``jax.make_mesh`` picks for the topology (each host's devices contiguous on the axis)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def local_mesh(devices) -> Mesh:
    """A data-parallel mesh over exactly ``devices`` in the given order (e.g. one host's devices
    for offline rendering, where no collective crosses hosts)."""
    return Mesh(np.asarray(list(devices)), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_abstract(tree: Any, mesh: Mesh) -> Any:
    """``jax.ShapeDtypeStruct``s of ``tree`` (arrays or abstract values), replicated on ``mesh``:
    the target a checkpoint is restored into, or the ``out_shardings`` a state is created with."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def to_host(x) -> np.ndarray:
    """A global array in full on this host: gathered from every process when there are several
    (all processes must call it together), else simply fetched."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def first_replica(tree: Any) -> Any:
    """Host copies of a (possibly multi-host) replicated tree: each array's first local shard."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, tree)
