"""Every model and training value of a config, checked before anything slow starts: before a
dataset is built or a network initialised, and again when a trained model directory is loaded.

Each check is (ok, problem, fix); the first that fails is raised as one ``EdnError``.
"""

from __future__ import annotations

import jax

from edn_jax.conditioning import background
from edn_jax.data.augment import Augment
from edn_jax.errors import EdnError
from edn_jax.models import vgg
from edn_jax.models.factory import EXEMPLAR_MODES, EXEMPLAR_WARPS, compute_dtype
from edn_jax.stages import EPOCH_FIELDS, Stage, config_section, face_crop_side, plan_stages

REMAT_MODES = ("none", "perceptual", "full")
FACE_D_NORMS = ("batch", "instance")
FACE_PREV = ("refined", "raw")
VGG_INPUTS = ("pix2pixhd", "imagenet")


def _model_checks(m, names: list[str]) -> list[tuple[bool, str, str]]:
    checks = [
        (m.ngf >= 1, f"model.ngf={m.ngf} must be >= 1", "use e.g. 64"),
        (m.ndf >= 1, f"model.ndf={m.ndf} must be >= 1", "use e.g. 64"),
        (0 <= m.n_downsampling <= 8, f"model.n_downsampling={m.n_downsampling} is out of range", "use 1..8 (paper: 4)"),
        (m.n_blocks >= 0, f"model.n_blocks={m.n_blocks} must be >= 0", "use e.g. 9"),
        (min(m.num_d, m.num_d_local, m.num_d_face) >= 1,
         f"model.num_d, num_d_local and num_d_face ({m.num_d}, {m.num_d_local}, {m.num_d_face}) must be >= 1",
         "use the paper's 2, 3 and 3"),
        (m.n_layers_d >= 1, f"model.n_layers_d={m.n_layers_d} must be >= 1", "use e.g. 3"),
        (m.temporal or not m.use_prev_label, "model.use_prev_label=True needs model.temporal=True (a single-frame "
         "generator sees no previous frame)", "set model.temporal=True or model.use_prev_label=False"),
        (m.background in background.MODES, f"model.background={m.background!r} is not known",
         f"use one of {', '.join(background.MODES)}"),
        (m.plate_fill in background.FILLS, f"model.plate_fill={m.plate_fill!r} is not known",
         f"use one of {', '.join(background.FILLS)}"),
        (m.composite_region >= 0, f"model.composite_region={m.composite_region} must be >= 0",
         "use e.g. 0.1 (a tenth of the figure's height), or 0 for an unconfined mask"),
        (m.composite_region == 0 or m.background == "composite",
         f"model.composite_region={m.composite_region} confines the composite's mask, but model.background is "
         f"{m.background!r}", "set model.background=composite or model.composite_region=0"),
        (m.exemplar in EXEMPLAR_MODES, f"model.exemplar={m.exemplar!r} is not known",
         f"use one of {', '.join(EXEMPLAR_MODES)}"),
        (m.exemplar_warp in EXEMPLAR_WARPS, f"model.exemplar_warp={m.exemplar_warp!r} is not known",
         f"use one of {', '.join(EXEMPLAR_WARPS)}"),
        (m.exemplar_warp == "none" or m.exemplar != "none",
         f"model.exemplar_warp={m.exemplar_warp!r} needs an exemplar (model.exemplar is 'none')",
         "set model.exemplar=copy or model.exemplar_warp=none"),
    ]
    if "local" in names:
        checks += [(m.local_ngf >= 1 and 2 * m.local_ngf == m.ngf,
                    f"model.ngf={m.ngf} must be 2 * model.local_ngf={m.local_ngf} (the LocalEnhancer adds the global "
                    "generator's features to its local branch's)", f"set model.local_ngf={max(1, m.ngf // 2)}"),
                   (m.n_blocks_local >= 0, f"model.n_blocks_local={m.n_blocks_local} must be >= 0", "use e.g. 3")]
    if "face" in names:
        checks += [(min(m.face_ngf, m.face_ndf, m.face_n_layers_d) >= 1 and m.face_n_blocks >= 0
                    and 1 <= m.face_n_downsampling <= 6,
                    "model.face_ngf, face_ndf, face_n_layers_d must be >= 1, face_n_blocks >= 0 and "
                    "face_n_downsampling in 1..6", "use the paper's 64, 64, 3, 5 and 3"),
                   (m.face_d_norm in FACE_D_NORMS, f"model.face_d_norm={m.face_d_norm!r} is not known",
                    f"use one of {', '.join(FACE_D_NORMS)}"),
                   (m.face_prev in FACE_PREV, f"model.face_prev={m.face_prev!r} is not known",
                    f"use one of {', '.join(FACE_PREV)}")]
    return checks


def _training_checks(config, stages: list[Stage]) -> list[tuple[bool, str, str]]:
    t, l = config.train, config.loss
    names = [s.name for s in stages]
    checks = [
        (t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1", "use e.g. 8"),
        (t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0", "use e.g. 2e-4"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"train.beta1/beta2=({t.beta1}, {t.beta2}) must be in [0, 1)",
         "use 0.5 and 0.999"),
        (t.log_every >= 1 and t.checkpoint_every >= 1 and t.sample_every >= 1,
         "train.log_every, checkpoint_every and sample_every must be >= 1", "use positive step counts"),
        (l.lambda_feat >= 0 and l.lambda_vgg >= 0 and l.lambda_l1 >= 0,
         "loss.lambda_feat, loss.lambda_vgg and loss.lambda_l1 must be >= 0", "use 10, 10 and 0 (pix2pixHD)"),
        (l.perceptual in ("vgg16", "vgg19", "none"), f"loss.perceptual={l.perceptual!r} is not known",
         "use vgg16, vgg19 or none"),
        (t.remat in REMAT_MODES, f"train.remat={t.remat!r} is not known", f"use one of {', '.join(REMAT_MODES)}"),
        (l.vgg_input in VGG_INPUTS, f"loss.vgg_input={l.vgg_input!r} is not known", f"use one of {', '.join(VGG_INPUTS)}"),
        (l.global_vgg_scale >= 0, f"loss.global_vgg_scale={l.global_vgg_scale} must be >= 0",
         "use 0.5 (the original) or 1.0"),
        (0 <= t.prev_noise <= 1, f"train.prev_noise={t.prev_noise} is out of range", "use e.g. 0.05, or 0 for none"),
        (t.exemplar_candidates >= 1 and t.exemplar_exclude >= 0,
         f"train.exemplar_candidates={t.exemplar_candidates} must be >= 1 and train.exemplar_exclude="
         f"{t.exemplar_exclude} >= 0", "use e.g. 8 and 8"),
    ]
    Augment.from_config(t.augment)  # raises on a value out of range
    for path, epochs_field, _ in EPOCH_FIELDS:
        value = config_section(config, path)[epochs_field]
        checks.append((value >= 0, f"{path}.{epochs_field}={value} must be >= 0", "use 0 to give the length in steps"))
    for path in ("train", "train.local", "train.face"):
        section = config_section(config, path)
        checks.append((section.decay_epochs <= section.num_epochs,
                       f"{path}.decay_epochs={section.decay_epochs} exceeds {path}.num_epochs={section.num_epochs}",
                       f"give the stage's length in epochs too ({path}.num_epochs), e.g. twice its decay"))
    checks.append((t.face.d_alone_epochs <= t.face.num_epochs,
                   f"train.face.d_alone_epochs={t.face.d_alone_epochs} exceeds train.face.num_epochs="
                   f"{t.face.num_epochs}", "give the face stage's length in epochs too, e.g. 20 times d_alone_epochs"))
    prefix = {"global": "train", "local": "train.local", "face": "train.face"}
    for stage in stages:
        p = prefix[stage.name]
        checks += [
            (stage.num_steps >= 1, f"{p}.num_steps={stage.num_steps} must be >= 1", "set the stage's training steps"),
            (0 <= stage.decay_steps <= stage.num_steps, f"{p}.decay_steps={stage.decay_steps} is outside "
             f"[0, {p}.num_steps]", f"use e.g. half of {p}.num_steps"),
        ]
    if "local" in names:
        checks.append((0 <= t.local.fix_global_steps <= t.local.num_steps,
                       f"train.local.fix_global_steps={t.local.fix_global_steps} is outside [0, train.local.num_steps]",
                       "use e.g. a tenth of train.local.num_steps"))
    if "face" in names:
        checks.append((0 <= t.face.d_alone_steps <= t.face.num_steps,
                       f"train.face.d_alone_steps={t.face.d_alone_steps} is outside [0, train.face.num_steps]",
                       "use e.g. a fifth of train.face.num_steps"))
    return checks


def validate_train_config(config, check_batch: bool = True) -> None:
    """Every training value checked before anything slow starts (``check_batch=False``: the
    model and stage values only, for loading a trained model where no training batch exists)."""
    m, t = config.model, config.train
    stages = plan_stages(config)
    names = [s.name for s in stages]
    checks = _model_checks(m, names) + _training_checks(config, stages)
    checks.append((t.height >= 16 and t.width >= 16, f"train size {t.height}x{t.width} is too small",
                   "use e.g. 256x256"))
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)
    factor = 2 ** m.n_downsampling
    if t.height % factor or t.width % factor:
        raise EdnError(f"train size {t.height}x{t.width} is not divisible by 2^n_downsampling = {factor}",
                       f"use a size that is a multiple of {factor}, or fewer downsamplings")
    if "face" in names:
        face_crop_side(config, stages[-1].height, stages[-1].width)
    compute_dtype(config)
    loss = config.loss
    if check_batch and loss.perceptual != "none" and loss.lambda_vgg > 0:  # before a dataset is built
        vgg.require_perceptual_weights(loss.perceptual, loss.vgg19_weights, f"loss.perceptual={loss.perceptual}")
    if check_batch and t.batch_size % jax.device_count():
        raise EdnError(f"train.batch_size={t.batch_size} does not split over {jax.device_count()} devices",
                       f"use a multiple of {jax.device_count()}")
