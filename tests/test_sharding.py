"""The mesh and array layouts: a data axis over the devices given, batches split along it, states
replicated, abstract restore targets carrying the sharding."""

import jax
import jax.numpy as jnp
import numpy as np

from edn_jax.runtime import sharding


def test_make_mesh_puts_every_device_on_the_data_axis():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == (sharding.DATA_AXIS,) and mesh.shape[sharding.DATA_AXIS] == 8
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
    two = sharding.make_mesh(jax.devices()[2:4])
    assert [d.id for d in two.devices.flat] == [d.id for d in jax.devices()[2:4]]
    local = sharding.local_mesh(jax.devices()[5:2:-1])  # exactly these devices, in this order
    assert [d.id for d in local.devices.flat] == [d.id for d in jax.devices()[5:2:-1]]


def test_batches_split_over_the_devices_and_states_are_replicated():
    mesh = sharding.make_mesh()
    batch = jax.device_put(np.arange(16 * 3, dtype=np.float32).reshape(16, 3), sharding.batch_sharding(mesh))
    rows = sorted((s.index[0].start, s.index[0].stop) for s in batch.addressable_shards)
    assert rows == [(2 * i, 2 * i + 2) for i in range(8)]
    np.testing.assert_array_equal(sharding.to_host(batch), np.arange(48, dtype=np.float32).reshape(16, 3))
    state = jax.device_put({"w": np.ones((2, 2), np.float32)}, sharding.replicated(mesh))
    assert all(s.data.shape == (2, 2) for s in state["w"].addressable_shards)
    np.testing.assert_array_equal(sharding.first_replica(state)["w"], np.ones((2, 2)))


def test_abstract_targets_keep_shape_dtype_and_carry_the_replicated_sharding():
    mesh = sharding.make_mesh(jax.devices()[:2])
    tree = {"a": jnp.zeros((3, 4), jnp.bfloat16), "b": jax.ShapeDtypeStruct((5,), jnp.int32)}
    abstract = sharding.replicated_abstract(tree, mesh)
    assert (abstract["a"].shape, abstract["a"].dtype, abstract["b"].shape) == ((3, 4), jnp.bfloat16, (5,))
    assert abstract["b"].sharding == sharding.replicated(mesh)
    created = jax.jit(lambda: {"a": jnp.ones((3, 4), jnp.bfloat16), "b": jnp.arange(5)},
                      out_shardings=jax.tree.map(lambda a: a.sharding, abstract))()
    assert created["a"].sharding == sharding.replicated(mesh) and len(created["b"].addressable_shards) == 2
