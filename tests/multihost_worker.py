"""One process of tests/test_distributed.py: a few real training steps on a global mesh.

  EDN_COORDINATOR_ADDRESS=127.0.0.1:PORT EDN_NUM_PROCESSES=2 EDN_PROCESS_ID=0 JAX_PLATFORMS=cpu \
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/multihost_worker.py OUT_DIR [DATASET_DIR]

Joins the distributed runtime through ``edn_jax.runtime.distributed.maybe_initialize`` (the EDN_*
variables), then ``run`` trains on the mesh of all processes' devices: ``RANDOM_STEPS``
steps on random global batches, each process feeding only its own rows, then (given a
dataset) ``PIPELINE_STEPS`` steps on the input pipeline's batches. Writes
``OUT_DIR/process_<i>.npz``: this process's copy of the state after the random steps and
at the end, the last metrics, and the pipeline's global batches gathered from all
processes. The test runs the same script without EDN_* variables, on 1 device, as the
single-process reference.
"""

from __future__ import annotations

import os
import sys

RANDOM_STEPS = 3
PIPELINE_STEPS = 2


def tiny_config():
    """helpers.tiny_config with one 1-layer discriminator and no residual block: half the compile time."""
    from helpers import tiny_config as tiny  # imports JAX: not before the distributed runtime is joined

    config = tiny(small_d=True)
    config.model.n_blocks = 0
    return config


def random_global_batch(step: int, batch: int = 8, size: int = 32):
    import numpy as np

    from edn_jax.data.batch import IMAGE_FIELDS

    rng = np.random.default_rng(1000 + step)
    return {k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32) for k in IMAGE_FIELDS}


def _wait_for(path: str, timeout_s: float = 300.0) -> None:
    """The test builds the dataset while the workers compile; TFDS renames a finished build into place."""
    import time

    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.1)


def _flat(tree, prefix: str) -> dict:
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def run(mesh, dataset_dir: str | None) -> dict:
    """Trains on ``mesh`` (all processes call this); returns this process's arrays to save."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from edn_jax.data import dataset, input_pipeline, pair_schedule
    from edn_jax.data.batch import IMAGE_FIELDS, Batch
    from edn_jax.runtime import sharding
    from edn_jax.training import generator_stage

    config = tiny_config()
    trainer = generator_stage.GeneratorTrainer.create(config, mesh)
    state = trainer.init(0)
    batch_sharding = sharding.batch_sharding(mesh)
    b, index, count = config.train.batch_size, jax.process_index(), jax.process_count()
    rows = slice(index * b // count, (index + 1) * b // count)
    out, metrics = {}, None
    for step in range(RANDOM_STEPS):
        global_batch = random_global_batch(step)
        batch = Batch(**{k: jax.make_array_from_process_local_data(batch_sharding, v[rows], v.shape)
                         for k, v in global_batch.items()})
        state, metrics = trainer.step(state, batch)
        jax.block_until_ready((state, metrics))
    out.update(_flat(state, f"step{RANDOM_STEPS}/state"))
    if dataset_dir:
        _wait_for(os.path.join(dataset_dir, "dataset_info.json"))
        split = dataset.open_split(dataset_dir, "train")
        pairs = pair_schedule.PairIndex.from_source(split.source, split.video_ids, split.frame_indices)
        options = input_pipeline.PipelineOptions(b, config.train.height, config.train.width, config.train.seed,
                                                 num_threads=2)
        with input_pipeline.make_train_iterator(split.source, options, mesh, pair_index=pairs) as batches:
            for _ in range(PIPELINE_STEPS):
                step, batch = next(batches)
                gathered = multihost_utils.process_allgather({k: getattr(batch, k) for k in IMAGE_FIELDS}, tiled=True)
                out.update({f"batch{step}/{k}": np.asarray(v) for k, v in gathered.items()})
                state, metrics = trainer.step(state, batch)
                jax.block_until_ready((state, metrics))
    out.update(_flat(state, "final/state"))
    out.update(_flat(metrics, "final/metrics"))
    out["devices"] = np.array([jax.device_count(), jax.local_device_count(), count, index])
    return out


def main(argv) -> None:
    from edn_jax.runtime import distributed

    distributed.maybe_initialize()  # before anything touches the backend
    import jax
    import numpy as np

    from edn_jax.runtime import sharding

    out_dir, dataset_dir = argv[1], (argv[2] if len(argv) > 2 else None)
    result = run(sharding.make_mesh(), dataset_dir)
    path = os.path.join(out_dir, f"process_{jax.process_index()}.npz")
    np.savez(path + ".tmp.npz", **result)
    os.replace(path + ".tmp.npz", path)
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv)
