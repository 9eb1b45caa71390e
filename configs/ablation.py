"""The paper's ablation on the synthetic subject, on 2 CPU cores: pix2pixHD vs +T.S. vs +T.S.+Face.

  python -m edn_jax.main --config configs/ablation.py --workdir runs/ablation

Trains two models on one dataset with the demo's sizes (configs/demo.py; the budget it had when
docs/ablation.md was measured, and without its small-footage additions): single-frame pix2pixHD
(model.temporal=False, the global stage) and the paper's model (temporal smoothing, the
global stage, then the face stage on top of it). +T.S. is the paper's model after its global stage;
+T.S.+Face after its face stage. Each is evaluated on the held-out frames (edn_jax.evaluation.evaluate) and the
table is printed and written to runs/ablation/ablation.md (a copy is in docs/ablation.md). A rerun
skips what is trained and evaluated.
"""

from configs import demo


def get_config():
    config = demo.get_config()
    config.mode = "ablation"
    config.train.evaluate_holdout = False  # the ablation's own evaluation replaces the end-of-stage one
    # The paper's components only (docs/ablation.md): none of the demo's small-footage additions.
    config.model.background, config.model.composite_region = "none", 0.0
    config.model.exemplar, config.model.exemplar_warp = "none", "none"
    for field in ("scale", "rotate", "shift", "flip"):
        config.train.augment[field] = 0.0
    config.train.prev_noise = 0.0
    # The budget docs/ablation.md was measured with (the demo's before it was cut to ~10 minutes).
    config.train.num_steps, config.train.decay_steps = 1100, 400
    config.train.sample_every = config.train.checkpoint_every = 275
    config.train.face.num_steps, config.train.face.decay_steps, config.train.face.d_alone_steps = 400, 200, 100
    return config
