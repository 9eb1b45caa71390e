"""The demo: train the generator on the built-in synthetic subject, on 2 CPU cores in under 10 minutes.

  ./launch.sh demo
  # same as: python -m edn_jax.main --config configs/demo.py --workdir runs/demo

It builds the synthetic dataset into the workdir (first run only), trains a small pix2pixHD with
temporal smoothing, writes sample grids (stick figure | generated | real) to runs/demo/samples and
TensorBoard, and ends with the held-out SSIM against a mean-training-frame baseline. Rerunning
resumes from the last checkpoint.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.mode = "train"
    config.synthetic.seed = 0
    config.synthetic.num_frames = 300       # 240 training, 60 held-out frames
    config.build.synthetic_seeds = "0"
    config.model.ngf = 16
    config.model.n_downsampling = 3
    config.model.n_blocks = 3
    config.model.ndf = 16
    config.model.num_d = 2
    config.loss.perceptual = "vgg16"        # without it the outputs carry GAN noise that SSIM punishes
    config.loss.lambda_l1 = 100.0           # not in the paper: pins the static background within the CPU budget
    config.train.height = 96
    config.train.width = 96
    config.train.batch_size = 1             # pix2pixHD's default: the most updates per CPU-second
    config.train.num_steps = 1100
    config.train.decay_steps = 400
    config.train.log_every = 50
    config.train.sample_every = 275
    config.train.checkpoint_every = 275
    return config
