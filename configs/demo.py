"""The demo: train the full model on the built-in synthetic subject, on 2 CPU cores in about 10 minutes.

(10:45 measured with ``./launch.sh demo`` on an idle 2-core machine before the plate was inpainted
and the mask confined to the pose: 5:05 global stage, 3:37 face stage, the rest building, held-out
scores and transfer. Held-out now: body-crop LPIPS 0.066 against the nearest training frame's 0.138,
whole-frame SSIM 0.931 against the mean training frame's 0.773 and the nearest training frame's
0.820; docs/results.md, "Transfer from real sources".)

  ./launch.sh demo
  # same as training, then transferring another synthetic dancer's motion onto the trained target:
  python -m edn_jax.main --config configs/demo.py --workdir runs/demo
  python -m edn_jax.main --config configs/transfer.py --workdir runs/demo/transfer \
      --config.transfer.model_workdir=runs/demo --config.transfer.side_by_side=True

It builds the synthetic dataset into the workdir (first run only), trains a small pix2pixHD with
temporal smoothing (the global stage), then the face GAN on top of it (the face stage), writes
sample grids (stick figure | generated | real) to runs/demo/samples/<stage> and TensorBoard, and
ends each stage with held-out scores: SSIM against a mean-training-frame baseline, and for the
face stage face-crop L1 and LPIPS with and without the face residual. Rerunning resumes from
the last checkpoint.
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
    # Not in the paper: what generalises from little footage (docs/results.md, measured on held-out frames).
    config.model.background = "composite"   # the background plate from the training frames; G draws the person
    config.model.composite_region = 0.15    # ...only near the pose asked for (0.15 of the figure's height)
    config.train.augment.scale = 0.1        # one random similarity transform (and flip) per training pair
    config.train.augment.rotate = 5.0
    config.train.augment.shift = 0.05
    config.train.augment.flip = 0.5
    config.train.prev_noise = 0.05          # noise on the previous frame G renders from, so it does not drift
    config.model.exemplar = "copy"          # G sees the nearest training frame by pose and may copy its pixels,
    config.model.exemplar_warp = "limbs"    # moved limb by limb into the pose asked for
    config.train.stages = "global,face"     # the local stage (2x size) is out of a CPU budget
    config.model.face_ngf = 16
    config.model.face_n_blocks = 3
    config.model.face_ndf = 32
    config.train.height = 96
    config.train.width = 96
    config.train.batch_size = 1             # pix2pixHD's default: the most updates per CPU-second
    config.train.num_steps = 800
    config.train.decay_steps = 300
    config.train.log_every = 50
    config.train.sample_every = 200
    config.train.checkpoint_every = 200
    config.train.face.num_steps = 300
    config.train.face.decay_steps = 150
    config.train.face.d_alone_steps = 75
    return config
