"""The global and local stages: pix2pixHD with temporal smoothing, one sharded jitted step.

The step follows the paper's temporal smoothing: G renders frame t-1 from its stick
figure and a blank previous frame, then frame t from its stick figure and that output,
with gradients flowing through G(x_{t-1}) into G(x_t). The discriminator judges
(x_{t-1}, x_t, y_{t-1}, y_t) against (x_{t-1}, x_t, G(x_{t-1}), G(x_t)). With
``model.temporal=False`` it is single-frame pix2pixHD, the paper's baseline.

``GeneratorTrainer`` holds a stage's jitted pieces behind ``stages.StageTrainer``: the
state is created already sharded (``jax.eval_shape``, then ``jax.jit(init,
out_shardings=...)``), and the step donates it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from edn_jax.conditioning import background as background_lib
from edn_jax.data.batch import EXEMPLAR_FIELDS, IMAGE_FIELDS, PLATE_FIELDS, Batch
from edn_jax.models.discriminator import extend_scales
from edn_jax.models.factory import build_models, uses_exemplar
from edn_jax.models.inference import Renderer, copy_source, generate, generator_input
from edn_jax.models.local_enhancer import load_global_params
from edn_jax.runtime import sharding
from edn_jax.stages import Stage, model_signature, plan_stages
from edn_jax.training import losses

def batch_fields(config) -> tuple[str, ...]:
    """The ``Batch`` fields a generator stage's step reads."""
    return (IMAGE_FIELDS + (PLATE_FIELDS if background_lib.uses_plate(config.model.background) else ())
            + (EXEMPLAR_FIELDS if uses_exemplar(config.model.exemplar) else ()))


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    rng: jax.Array  # raw uint32 key data, so checkpoints need no typed-key support


def render_pair(generator, g_params, label_prev, label, use_prev_label: bool, temporal: bool = True,
                background=None, background_mode: str = "none", prev_noise=None, exemplars=(None, None),
                exemplar_mode: str = "none", region: float = 0.0):
    """G's outputs for frames t-1 and t as the paper trains them: t-1 from a blank (mid-grey)
    previous frame, t from G's own output for t-1, so gradients flow through G(x_{t-1}).
    With ``temporal=False`` each frame comes from its own stick figure alone. ``background``: the
    plate(s) [B or 1, H, W, 3] for ``background_mode`` "input"/"composite"; ``prev_noise``: added to
    G(x_{t-1}) where frame t is rendered from it (``train.prev_noise``), not to the frame t-1 returned;
    ``exemplars``: frame t-1's and frame t's exemplars [B, H, W, 6] for ``exemplar_mode`` "input"/"copy"
    (``model.exemplar``), or Nones; ``region``: ``model.composite_region``."""
    blank = jnp.zeros_like(label_prev)
    plate = background if background_lib.uses_plate(background_mode) else None
    g = functools.partial(generate, generator, g_params, background=plate, mode=background_mode, region=region)
    fake_prev = g(generator_input(label_prev, blank, blank, use_prev_label, temporal, plate, exemplars[0]),
                  copy_from=copy_source(exemplars[0], exemplar_mode))
    shown_prev = fake_prev if prev_noise is None else fake_prev + prev_noise
    fake = g(generator_input(label, shown_prev, label_prev, use_prev_label, temporal, plate, exemplars[1]),
             copy_from=copy_source(exemplars[1], exemplar_mode))
    return fake_prev, fake


def discriminator_input(label_prev, label, image_prev, image, temporal: bool = True):
    """What the multiscale D judges: the consecutive pair (x_{t-1}, x_t, y_{t-1}, y_t) as 12 channels
    (temporal smoothing), or with ``temporal=False`` (pix2pixHD) each frame alone as (x, y), the two
    frames of the pair stacked along the batch."""
    if temporal:
        return jnp.concatenate([label_prev, label, image_prev, image], axis=-1)
    return jnp.concatenate([jnp.concatenate([label_prev, image_prev], axis=-1),
                            jnp.concatenate([label, image], axis=-1)], axis=0)


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
    """(G's Adam, D's Adam, their learning-rate schedule) of a stage."""
    lr = learning_rate(config, stage)
    make = lambda: optax.adam(lr, b1=config.train.beta1, b2=config.train.beta2)  # noqa: E731
    return make(), make(), lr


def make_perceptual(config, mesh: Mesh):
    """The configured perceptual loss replicated on the mesh, or None when it is off."""
    perceptual = losses.make_perceptual_loss(
        config.loss.perceptual if config.loss.perceptual != "none" else "vgg16", config.loss.vgg19_weights,
        enabled=config.loss.lambda_vgg > 0 and config.loss.perceptual != "none",
        imagenet_input=config.loss.vgg_input == "imagenet", dtype=config.model.dtype)
    return None if perceptual is None else jax.device_put(perceptual, sharding.replicated(mesh))


def vgg_weight(config, stage: Stage) -> float:
    """The perceptual term's weight on full frames in a stage: ``loss.lambda_vgg``, times
    ``loss.global_vgg_scale`` while the main generator is the global one (the original halves it
    there: ``loss_G_VGG *= 0.5`` when netG is global, so the local stage's term is twice as strong)."""
    return config.loss.lambda_vgg * (config.loss.global_vgg_scale if stage.generator == "global" else 1.0)


def guard_nonfinite(updated, state, metrics: dict):
    """(state, metrics): a step whose metrics are not all finite leaves ``state`` untouched but for
    the step count, and says so in ``metrics["nonfinite"]``; the host stops at its next check."""
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    new_state = new_state.replace(step=state.step + 1)
    return new_state, dict(metrics, nonfinite=1.0 - finite.astype(jnp.float32))


def example_exemplar(config, image):
    """A zero exemplar shaped for ``image`` [B, H, W, 3] with ``model.exemplar`` (for shapes), else None."""
    return jnp.concatenate([image, image], axis=-1) if uses_exemplar(config.model.exemplar) else None


def batch_exemplars(batch: Batch) -> tuple:
    """(frame t-1's, frame t's) exemplars of a training batch, or Nones without them."""
    return batch.exemplar_prev, batch.exemplar


def init_state(config, stage: Stage, rng, generator, discriminator, g_tx, d_tx) -> TrainState:
    g_rng, d_rng, rng = jax.random.split(rng, 3)
    image = jnp.zeros((1, stage.height, stage.width, 3), jnp.float32)
    plate = image if background_lib.uses_plate(config.model.background) else None
    g_in = generator_input(image, image, image, config.model.use_prev_label, config.model.temporal, plate,
                           example_exemplar(config, image))
    g_params = generator.init(g_rng, g_in)["params"]
    d_params = discriminator.init(d_rng, discriminator_input(image, image, image, image, config.model.temporal))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), rng=rng)


def init_local_from_global(config, stage: Stage, rng, previous: TrainState, generator, discriminator, g_tx,
                           d_tx) -> TrainState:
    """The local stage's start: fresh local branch, the global stage's generator inside it, and a
    ``stage.num_d``-scale discriminator whose scales the global stage's D has come from it (fully
    convolutional, so they apply at the new size), the others fresh; fresh Adam states."""
    fresh = init_state(config, stage, rng, generator, discriminator, g_tx, d_tx)
    g_params = load_global_params(fresh.g_params, previous.g_params)
    d_params = extend_scales(fresh.d_params, previous.d_params)
    return fresh.replace(g_params=g_params, d_params=d_params, g_opt_state=g_tx.init(g_params),
                         d_opt_state=d_tx.init(d_params))


@dataclasses.dataclass(frozen=True)
class RematApply:
    """A module whose ``apply`` is rematerialised: its activations are recomputed in the backward
    pass instead of being kept from the forward pass (``train.remat="full"``)."""

    module: Any

    def apply(self, variables, *args):
        return jax.checkpoint(self.module.apply)(variables, *args)


def frame_g_terms(discriminator, d_params, real, fake_in, fakes, images, *, lambda_feat: float, lambda_l1: float,
                  vgg_loss, lambda_vgg: float) -> dict:
    """The full-frame G terms of both stages, in the order they are summed: LSGAN and feature matching
    against the multiscale D (``real`` and ``fake_in``: its inputs), then, where weighted, L1 and the
    perceptual loss ``vgg_loss`` (None: off) over both frames (``fakes``, ``images``: (t-1, t))."""
    (fake_prev, fake), (image_prev, image) = fakes, images
    d_fake = discriminator.apply({"params": d_params}, fake_in)
    d_real = discriminator.apply({"params": d_params}, real)
    terms = {"g_gan": losses.lsgan_g_loss(d_fake), "g_feat": losses.feature_matching_loss(d_real, d_fake, lambda_feat)}
    if lambda_l1 > 0:
        terms["g_l1"] = lambda_l1 * (jnp.mean(jnp.abs(fake - image)) + jnp.mean(jnp.abs(fake_prev - image_prev)))
    if vgg_loss is not None:
        terms["g_vgg"] = lambda_vgg * (vgg_loss(fake, image) + vgg_loss(fake_prev, image_prev))
    return terms


def multiscale_d_update(discriminator, d_tx, d_params, d_opt_state, real, fake_in):
    """One LSGAN update of the multiscale D on ``real`` against ``fake_in`` (held fixed):
    (new params, new optimizer state, its loss, its gradients)."""
    def d_loss_fn(params):
        return losses.lsgan_d_loss(discriminator.apply({"params": params}, real),
                                   discriminator.apply({"params": params}, fake_in))

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_params)
    d_updates, d_opt_state = d_tx.update(d_grads, d_opt_state, d_params)
    return optax.apply_updates(d_params, d_updates), d_opt_state, d_loss, d_grads


def train_step(state: TrainState, batch: Batch, perceptual, *, config, generator, discriminator, g_tx, d_tx,
               fix_global_steps: int = 0, lambda_vgg: float | None = None):
    """One G and one D update from the same forward pass (as pix2pixHD), guarded against NaN/Inf.

    With ``fix_global_steps`` (local stage) the LocalEnhancer's global part gets zero gradients
    for that many steps, so only the new local branch learns at first (pix2pixHD's niter_fix_global).
    ``lambda_vgg``: the perceptual term's weight (``vgg_weight`` of the stage; None: ``loss.lambda_vgg``).
    """
    use_prev, temporal = config.model.use_prev_label, config.model.temporal
    remat = config.train.remat
    if remat == "full":
        generator = RematApply(generator)
    vgg_loss = perceptual
    if perceptual is not None and remat in ("perceptual", "full"):
        vgg_loss = functools.partial(perceptual, remat=True)
    lambda_feat, lambda_l1 = config.loss.lambda_feat, config.loss.lambda_l1
    lambda_vgg = config.loss.lambda_vgg if lambda_vgg is None else lambda_vgg
    label_prev, label = batch.label_prev, batch.label
    image_prev, image = batch.image_prev, batch.image
    real = discriminator_input(label_prev, label, image_prev, image, temporal)
    prev_noise = None
    if config.train.prev_noise > 0 and temporal:
        key = jax.random.fold_in(state.rng, state.step)
        prev_noise = config.train.prev_noise * jax.random.normal(key, label.shape, jnp.float32)
    render = functools.partial(render_pair, generator, label_prev=label_prev, label=label, use_prev_label=use_prev,
                               temporal=temporal, background=batch.background,
                               background_mode=config.model.background, prev_noise=prev_noise,
                               exemplars=batch_exemplars(batch), exemplar_mode=config.model.exemplar,
                               region=float(config.model.composite_region))

    def g_loss_fn(g_params):
        fake_prev, fake = render(g_params)
        fake_in = discriminator_input(label_prev, label, fake_prev, fake, temporal)
        terms = frame_g_terms(discriminator, state.d_params, real, fake_in, (fake_prev, fake), (image_prev, image),
                              lambda_feat=lambda_feat, lambda_l1=lambda_l1, vgg_loss=vgg_loss, lambda_vgg=lambda_vgg)
        total = sum(terms.values())
        return total, (terms, fake_prev, fake)

    (g_total, (terms, fake_prev, fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    if fix_global_steps > 0:
        frozen = state.step < fix_global_steps
        g_grads = dict(g_grads, global_generator=jax.tree.map(lambda g: jnp.where(frozen, jnp.zeros_like(g), g),
                                                               g_grads["global_generator"]))
    fake_in = jax.lax.stop_gradient(discriminator_input(label_prev, label, fake_prev, fake, temporal))
    d_params, d_opt_state, d_loss, d_grads = multiscale_d_update(discriminator, d_tx, state.d_params, state.d_opt_state,
                                                                 real, fake_in)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    updated = state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, g_updates),
                            d_params=d_params, g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    metrics = dict(terms, g_total=g_total, d_loss=d_loss,
                   g_grad_norm=optax.tree.norm(g_grads), d_grad_norm=optax.tree.norm(d_grads),
                   g_param_norm=optax.tree.norm(updated.g_params), d_param_norm=optax.tree.norm(updated.d_params))
    return guard_nonfinite(updated, state, metrics)


def _models(config, stage: Stage) -> dict:
    generator, discriminator = build_models(config, stage.generator, stage.num_d)
    g_tx, d_tx, _ = make_optimizers(config, stage)
    return dict(generator=generator, discriminator=discriminator, g_tx=g_tx, d_tx=d_tx)


def abstract_stage_state(config, mesh: Mesh, stage: Stage):
    """The TrainState shapes of a global or local stage, replicated on ``mesh`` (for restoring)."""
    init = functools.partial(init_state, config, stage, **_models(config, stage))
    return sharding.replicated_abstract(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)


@dataclasses.dataclass
class GeneratorTrainer:
    """The jitted, sharded pieces of a global or local stage (a ``stages.StageTrainer``)."""

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
    def create(cls, config, mesh: Mesh, stage: Stage | None = None) -> "GeneratorTrainer":
        stage = stage or plan_stages(config)[0]
        if stage.name == "face":
            raise ValueError("the face stage has its own trainer: edn_jax.training.face_stage.FaceTrainer")
        models = _models(config, stage)
        self = cls(config, mesh, stage, models["generator"], models["discriminator"], models["g_tx"], models["d_tx"],
                   learning_rate(config, stage), make_perceptual(config, mesh))
        self.state_sharding = jax.tree.map(lambda a: a.sharding, abstract_stage_state(config, mesh, stage))
        self.init_fn = jax.jit(functools.partial(init_state, config, stage, **models),
                               out_shardings=self.state_sharding)
        if stage.name == "local":
            self.init_from_fn = jax.jit(functools.partial(init_local_from_global, config, stage, **models),
                                        out_shardings=self.state_sharding)
        fix = config.train.local.fix_global_steps if stage.name == "local" else 0
        step = functools.partial(train_step, config=config, fix_global_steps=fix, lambda_vgg=vgg_weight(config, stage),
                                 **models)
        self.step_fn = jax.jit(step, in_shardings=(self.state_sharding, sharding.batch_sharding(mesh),
                                                   sharding.replicated(mesh)),
                               out_shardings=(self.state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))
        self.sample_fn = jax.jit(functools.partial(render_pair, self.generator,
                                                   use_prev_label=config.model.use_prev_label,
                                                   temporal=config.model.temporal,
                                                   background_mode=config.model.background,
                                                   exemplar_mode=config.model.exemplar,
                                                   region=float(config.model.composite_region)))
        return self

    def init(self, seed: int) -> TrainState:
        return self.init_fn(jax.random.PRNGKey(seed))

    def init_from(self, seed: int, previous: TrainState) -> TrainState:
        """This stage's first state, from the previous stage's final one."""
        return self.init_from_fn(jax.random.PRNGKey(seed), previous)

    def step(self, state: TrainState, batch: Batch, step: int | None = None) -> tuple[TrainState, dict]:
        return self.step_fn(state, batch.only(batch_fields(self.config)), self.perceptual)

    def sample(self, state: TrainState, batch: Batch) -> jax.Array:
        """Frame t as the step renders it (from G's own frame t-1), for sample grids."""
        return self.sample_fn(state.g_params, batch.label_prev, batch.label, background=batch.background,
                              exemplars=batch_exemplars(batch))[1]

    def renderer(self, state: TrainState, plate=None) -> tuple[Renderer, dict]:
        """(static renderer, params) for ``inference.render_chunk``; ``plate``: the background
        plate (``background.to_unit``) of a model with ``model.background``."""
        return Renderer.from_config(self.config, self.generator), {"g": state.g_params, "face": None,
                                                                  "background": plate}

    def signature(self) -> dict:
        return model_signature(self.config, self.stage)

    def abstract_state(self):
        return abstract_stage_state(self.config, self.mesh, self.stage)

    abstract = staticmethod(abstract_stage_state)  # (config, mesh, stage) -> the state's shapes, for restores
