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

import ml_collections


def add_transfer_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``config.transfer`` section (to move into configs/default.py) with its defaults."""
    config.transfer = ml_collections.ConfigDict()
    # The trained target: the --workdir of its training run (the same config's model/train settings).
    config.transfer.model_workdir = ""
    # What to transfer: comma-separated videos, pose-mode keypoint files (.npz), OpenPose JSON
    # directories, globs of those, or @FILE (one per line). "" = input.openpose_dir if set, else the
    # synthetic dancer below. (input.video is the target's video in a training config: not a source.)
    config.transfer.source = ""
    config.transfer.synthetic_seed = 1        # the synthetic source's motion (seed 0 is the demo's target)
    config.transfer.synthetic_frames = 120    # at synthetic.height x width and synthetic.fps
    config.transfer.synthetic_appearance = 1  # the synthetic source's clothes (side-by-side video only)
    config.transfer.normalize = True          # global pose normalization to the target (the paper's Sec. 3.2)
    config.transfer.side_by_side = False      # also write <name>_side_by_side.mp4
    config.transfer.keep_audio = True         # copy the source video's audio track
    config.transfer.chunk_frames = 32         # frames per compiled render call
    config.transfer.batch_videos = 0          # videos rendered at once over the devices; 0 = one per local device
    return config


def get_config(base: str = "demo") -> ml_collections.ConfigDict:
    config = importlib.import_module(f"configs.{base or 'demo'}").get_config()
    config.mode = "transfer"
    return add_transfer_fields(config)
