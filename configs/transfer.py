"""Motion transfer: render a source dancer's motion as a trained target (edn_jax.transfer.rendering).

A trained model directory describes itself: its checkpoints record every model and training
field it was trained with, so this config needs nothing of the training config, whatever
config and overrides trained the model. Train, then transfer:

  python -m edn_jax.main --config configs/demo.py --workdir runs/demo      # or ./launch.sh demo
  python -m edn_jax.main --config configs/transfer.py --workdir runs/transfer \
      --config.transfer.model_workdir=runs/demo \
      --config.transfer.source=../shared/data/two_people_cam01.mp4 --config.transfer.side_by_side=True

  # a model trained with configs/cpu.py and overrides; every video in a directory (batch offline
  # rendering); sources whose outputs exist are skipped, so rerunning resumes a batch
  python -m edn_jax.main --config configs/cpu.py --workdir runs/cpu32 --config.model.ngf=32 \
      --config.input.video=../shared/data/single_person_cam01.mp4
  python -m edn_jax.main --config configs/transfer.py --workdir runs/transfer_cpu \
      --config.transfer.model_workdir=runs/cpu32 --config.transfer.source='../shared/data/*.mp4'

  # with no source: a synthetic dancer (another seed = another dancer's motion)
  python -m edn_jax.main --config configs/transfer.py --workdir runs/transfer_synth \
      --config.transfer.model_workdir=runs/demo --config.transfer.synthetic_seed=3

An explicit --config.model.* (or train.height/width/stages) that contradicts the model's record
is an error naming the field; --config.model.dtype may change. Naming a config after a colon
(configs/transfer.py:cpu) starts from that config instead of configs/default.py: its settings
then count as explicit and must agree with the model's.

Outputs in --workdir: <source name>.mp4 (H.264 at the source's fps, with its audio), with
side_by_side also <source name>_side_by_side.mp4 (source | normalized stick figure | output),
and transfer_summary.json.
"""

import importlib

import ml_collections  # noqa: F401  (configs are ml_collections.ConfigDicts)


def get_config(base: str = "default") -> ml_collections.ConfigDict:
    config = importlib.import_module(f"configs.{base or 'default'}").get_config()
    config.mode = "transfer"
    return config
