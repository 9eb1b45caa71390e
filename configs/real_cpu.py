"""Your own footage on a CPU: the recipe that generalises from a few minutes (or less) of real video.

Measured on the first 80 frames of single_person_cam01 with the last 20 held out (docs/results.md):
the background plate (inpainted where the target always stands) composited under the generator's
mask, the mask confined to the pose asked for, jointly augmented training pairs, noise on the
previous frame, and the exemplar (the training frame nearest by pose, moved limb by limb into the
pose asked for, which the generator sees and may copy pixels from; in training one from 3+ frames
away), in about 22 minutes on 2 CPU cores for the global stage. Held-out body LPIPS 0.149, body
SSIM 0.708 and body pose distance 6.86 px, the nearest training frame's 0.156, 0.658 and 6.13 px
(the median plate before it: 0.131, 0.724, 12.73 px, with a second body where the target stands).

  python -m edn_jax.main --config configs/real_cpu.py --workdir runs/real \
      --config.input.video=../shared/data/single_person_cam01.mp4 --config.train.stages=global
  python -m edn_jax.main --config configs/real_cpu.py --workdir runs/real --config.mode=evaluate \
      --config.train.stages=global

(single_person_cam01's face is masked by a sphere, so its face stage has nothing to learn; footage
with a visible face keeps the default ``global,face``.) The frame size is portrait (192 rows x 112
columns, a 1080x1920 phone video's aspect); for landscape footage swap them:
``--config.build.height=112 --config.build.width=192 --config.train.height=112 --config.train.width=192``.
"""

from configs import demo


def get_config():
    config = demo.get_config()              # the demo's small networks and losses
    config.build.height, config.build.width = 192, 112
    config.train.height, config.train.width = 192, 112
    config.train.num_steps = 1200           # about 22 minutes on 2 cores at 192x112
    config.train.decay_steps = 600
    config.train.sample_every = 200
    config.train.checkpoint_every = 200
    config.train.exemplar_exclude = 2       # exemplars from 3+ frames away in training (docs/results.md)
    return config
