"""The smallest model that still has every part: for tests and quick end-to-end checks on a CPU.

  python -m edn_jax.main --config configs/tiny.py --workdir /tmp/edn_tiny \
      --config.train.stages=global,local,face

A 32x32 global stage (64x64 local), 8-channel networks, no perceptual loss, a few steps per
stage on a 20-frame synthetic subject: each stage trains in seconds once compiled. Tests start
from here and change only what they check.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.mode = "train"
    config.train.stages = "global"
    config.model.ngf, config.model.n_downsampling, config.model.n_blocks = 8, 2, 1
    config.model.ndf, config.model.n_layers_d, config.model.num_d = 8, 2, 2
    config.model.num_d_local = config.model.num_d_face = 2  # the paper's 3 costs compile time in every test
    config.model.local_ngf, config.model.n_blocks_local = 4, 1
    config.model.face_ngf, config.model.face_n_blocks, config.model.face_ndf = 8, 1, 8
    config.loss.perceptual = "none"
    config.train.height = config.train.width = 32
    config.train.batch_size = 8
    config.train.num_steps, config.train.decay_steps = 4, 2
    config.train.local.num_steps, config.train.local.decay_steps, config.train.local.fix_global_steps = 2, 1, 1
    config.train.face.num_steps, config.train.face.decay_steps, config.train.face.d_alone_steps = 2, 1, 1
    config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 2
    config.synthetic.num_frames = 20
    return config
