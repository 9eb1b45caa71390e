"""A CPU-size model: the paper's architecture scaled down to train on a laptop or CI machine.

  python -m edn_jax.main --config configs/cpu.py --workdir runs/cpu \
      --config.input.video=../shared/data/single_person_cam01.mp4
"""

from configs import default


def get_config():
    config = default.get_config()
    config.mode = "train"
    config.model.ngf = 16
    config.model.n_downsampling = 3
    config.model.n_blocks = 3
    config.model.ndf = 16
    config.model.num_d = 2
    config.train.stages = "global,face"
    config.model.face_ngf = 32
    config.model.face_ndf = 32
    config.train.height = 256
    config.train.width = 256
    config.train.batch_size = 4
    config.train.num_steps = 2000
    config.train.decay_steps = 1000
    config.train.log_every = 20
    config.train.sample_every = 200
    config.train.checkpoint_every = 200
    config.train.face.num_steps = 1000
    config.train.face.decay_steps = 500
    config.train.face.d_alone_steps = 200
    return config
