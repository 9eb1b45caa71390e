"""Motion transfer: render a source dancer's motion as a trained target (edn_jax.transfer).

The model/train sections must be those the target was trained with: this file takes them
from a training config, configs/demo.py unless another is named after a colon. Train, then
transfer:

  python -m edn_jax.main --config configs/demo.py --workdir runs/demo      # or ./launch.sh demo
  python -m edn_jax.main --config configs/transfer.py --workdir runs/transfer \
      --config.transfer.model_workdir=runs/demo \
      --config.transfer.source=../shared/data/two_people_cam01.mp4 --config.transfer.side_by_side=True

  # a model trained with configs/cpu.py; every video in a directory (batch offline rendering);
  # sources whose outputs exist are skipped, so rerunning resumes a batch
  python -m edn_jax.main --config configs/transfer.py:cpu --workdir runs/transfer_cpu \
      --config.transfer.model_workdir=runs/cpu --config.transfer.source='../shared/data/*.mp4'

  # with no source: a synthetic dancer (another seed = another dancer's motion)
  python -m edn_jax.main --config configs/transfer.py --workdir runs/transfer_synth \
      --config.transfer.model_workdir=runs/demo --config.transfer.synthetic_seed=3

Outputs in --workdir: <source name>.mp4 (H.264 at the source's fps, with its audio), with
side_by_side also <source name>_side_by_side.mp4 (source | normalized stick figure | output),
and transfer_summary.json.
"""

import importlib

import ml_collections  # noqa: F401  (configs are ml_collections.ConfigDicts)


def get_config(base: str = "demo") -> ml_collections.ConfigDict:
    config = importlib.import_module(f"configs.{base or 'demo'}").get_config()
    config.mode = "transfer"
    return config
