"""The face stage: Everybody Dance Now's face GAN, trained on top of a frozen main generator.

As the original release: the main generator (global or local, from the previous stage)
renders frame t-1 from a blank previous frame; the face residual generator refines its
face crop (stick-figure crop + G's crop -> G's crop + residual), pasted back; frame t is
rendered from that refined frame (``model.face_prev = "refined"``; ``"raw"`` conditions on
G's own output instead), and refined in turn. G's params are carried in the state untouched,
bit for bit, but the gradient of frame t's losses flows through G into frame t-1's residual.

The face generator's objective, throughout: the face PatchGAN's GAN term and the face
perceptual term on the crops (+ ``lambda_l1`` pixel L1 when set), counting only examples
with a detected face, plus the temporal multiscale D's GAN and feature-matching terms and the
perceptual term on the full refined frames. For the first ``train.face.d_alone_steps`` only
the face D learns (the multiscale D judges, frozen); afterwards the multiscale D learns too.
The face D is BatchNorm by default (``model.face_d_norm``), its statistics taken over the
crops with a face, running averages kept in the state.
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

from edn_jax.conditioning import face_crop
from edn_jax.conditioning import background as background_lib
from edn_jax.data.batch import FACE_FIELDS, Batch
from edn_jax.models.discriminator import extend_scales
from edn_jax.models.factory import build_discriminator, build_face_models, build_models
from edn_jax.models.inference import Renderer, copy_source, generate, generator_input
from edn_jax.runtime import sharding
from edn_jax.stages import Stage, face_crop_side, model_signature
from edn_jax.training import losses
from edn_jax.training.generator_stage import (TrainState, abstract_stage_state, batch_exemplars, batch_fields,
                                              discriminator_input, frame_g_terms, guard_nonfinite, make_optimizers,
                                              make_perceptual, multiscale_d_update, vgg_weight)


def face_fields(config) -> tuple[str, ...]:
    """The ``Batch`` fields the face stage's step reads (the plates too, for ``model.background``, and
    the exemplars, for ``model.exemplar``)."""
    return batch_fields(config) + FACE_FIELDS


@flax.struct.dataclass
class FaceState:
    step: jax.Array
    g_params: Any          # the main generator's, frozen: never updated in this stage
    d_params: Any          # the temporal multiscale discriminator's, trained after d_alone_steps
    face_g_params: Any
    face_d_params: Any
    face_d_stats: Any      # the face D's BatchNorm running averages ({} with InstanceNorm)
    d_opt_state: Any
    face_g_opt_state: Any
    face_d_opt_state: Any
    rng: jax.Array


def init_face_state(config, stage: Stage, side: int, rng, previous: TrainState, face_g, face_d, discriminator, d_tx,
                    face_g_tx, face_d_tx) -> FaceState:
    """The face stage's start: the previous stage's G, its D extended to ``stage.num_d`` scales
    (``extend_scales``), fresh face networks and Adam states."""
    g_rng, d_rng, md_rng, rng = jax.random.split(rng, 4)
    crop = jnp.zeros((1, side, side, 3), jnp.float32)
    face_g_params = face_g.init(g_rng, crop, crop)["params"]
    face_d_vars = face_d.init(d_rng, crop, crop)
    image = jnp.zeros((1, stage.height, stage.width, 3), jnp.float32)
    fresh_d = discriminator.init(md_rng, discriminator_input(image, image, image, image, config.model.temporal))
    d_params = extend_scales(fresh_d["params"], previous.d_params)
    return FaceState(step=jnp.zeros((), jnp.int32), g_params=previous.g_params, d_params=d_params,
                     face_g_params=face_g_params, face_d_params=face_d_vars["params"],
                     face_d_stats=face_d_vars.get("batch_stats", {}), d_opt_state=d_tx.init(d_params),
                     face_g_opt_state=face_g_tx.init(face_g_params),
                     face_d_opt_state=face_d_tx.init(face_d_vars["params"]), rng=rng)


def apply_face_d(face_d, params, stats, label_crops, crops, mask):
    """(the face D's outputs in training mode, its updated BatchNorm running averages)."""
    if not stats:  # InstanceNorm: no statistics to keep
        return face_d.apply({"params": params}, label_crops, crops, mask), stats
    outputs, updates = face_d.apply({"params": params, "batch_stats": stats}, label_crops, crops, mask,
                                    mutable=["batch_stats"])
    return outputs, updates["batch_stats"]


def refine(face_g, face_g_params, frames, labels, corners, valid, side: int):
    """(refined crops [B, side, side, 3], ``frames`` with them pasted in): frames without a face
    (``valid`` False) keep G's crop and frame."""
    g_c = face_crop.crop(frames, corners, side)
    refined_c = face_g.apply({"params": face_g_params}, face_crop.crop(labels, corners, side), g_c)
    refined_c = jnp.where(valid[:, None, None, None], refined_c.astype(frames.dtype), g_c)
    return refined_c, face_crop.paste(frames, refined_c, corners)


def render_face_pair(generator, g_params, face_g, face_g_params, batch, corners, side: int, *, use_prev_label: bool,
                     temporal: bool, refined_prev: bool, background_mode: str = "none", exemplar_mode: str = "none",
                     region: float = 0.0):
    """The pair as the face stage renders it: (refined crops [2B] as [t-1 rows; t rows], refined
    frame t-1, refined frame t). Frame t-1 comes from a blank previous frame; frame t from the
    refined frame t-1 (``refined_prev``) or G's own. ``corners`` [2B] place the crops."""
    n = batch.label.shape[0]
    label_prev, label = batch.label_prev, batch.label
    blank = jnp.zeros_like(label_prev)
    plate = batch.background if background_lib.uses_plate(background_mode) else None
    g = functools.partial(generate, generator, g_params, background=plate, mode=background_mode, region=region)
    exemplar_prev, exemplar = batch_exemplars(batch)
    raw_prev = g(generator_input(label_prev, blank, blank, use_prev_label, temporal, plate, exemplar_prev),
                 copy_from=copy_source(exemplar_prev, exemplar_mode))
    crops_prev, frame_prev = refine(face_g, face_g_params, raw_prev, label_prev, corners[:n],
                                    batch.face_valid_prev, side)
    previous = frame_prev if refined_prev else raw_prev
    raw = g(generator_input(label, previous, label_prev, use_prev_label, temporal, plate, exemplar),
            copy_from=copy_source(exemplar, exemplar_mode))
    crops, frame = refine(face_g, face_g_params, raw, label, corners[n:], batch.face_valid, side)
    return jnp.concatenate([crops_prev, crops], axis=0), frame_prev, frame


def face_train_step(state: FaceState, batch: Batch, perceptual, *, config, stage: Stage, side: int, with_full_d: bool,
                    generator, discriminator, face_g, face_d, d_tx, face_g_tx, face_d_tx):
    """One face G, face D (and, ``with_full_d``, multiscale D) update; G frozen; NaN-guarded."""
    lambda_feat, lambda_vgg, lambda_l1 = config.loss.lambda_feat, config.loss.lambda_vgg, config.loss.lambda_l1
    frame_vgg = vgg_weight(config, stage)
    both = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731  [t-1 rows; t rows]
    labels, images = both(batch.label_prev, batch.label), both(batch.image_prev, batch.image)
    valid = both(batch.face_valid_prev, batch.face_valid)
    h, w = labels.shape[1:3]
    corners = face_crop.crop_boxes(both(batch.face_box_prev, batch.face_box), valid, h, w, side)
    label_c, real_c = face_crop.crop(labels, corners, side), face_crop.crop(images, corners, side)
    weights = valid.astype(jnp.float32)
    temporal = config.model.temporal
    real_pair = discriminator_input(batch.label_prev, batch.label, batch.image_prev, batch.image, temporal)
    render = functools.partial(render_face_pair, generator, jax.lax.stop_gradient(state.g_params), face_g,
                               batch=batch, corners=corners, side=side, use_prev_label=config.model.use_prev_label,
                               temporal=temporal, refined_prev=config.model.face_prev == "refined",
                               background_mode=config.model.background, exemplar_mode=config.model.exemplar,
                               region=float(config.model.composite_region))

    def face_g_loss_fn(face_g_params):
        refined_c, frame_prev, frame = render(face_g_params=face_g_params)
        d_face, _ = apply_face_d(face_d, state.face_d_params, state.face_d_stats, label_c, refined_c, valid)
        terms = {"face_g_gan": losses.lsgan_g_loss(d_face, weights)}
        if perceptual is not None:
            terms["face_g_vgg"] = lambda_vgg * perceptual(refined_c, real_c, weights)
        if lambda_l1 > 0:
            terms["face_g_l1"] = lambda_l1 * losses.weighted_mean(jnp.abs(refined_c - real_c), weights)
        fake_pair = discriminator_input(batch.label_prev, batch.label, frame_prev, frame, temporal)
        terms.update(frame_g_terms(discriminator, state.d_params, real_pair, fake_pair, (frame_prev, frame),
                                   (batch.image_prev, batch.image), lambda_feat=lambda_feat, lambda_l1=0.0,
                                   vgg_loss=perceptual, lambda_vgg=frame_vgg))  # no full-frame L1 here
        return sum(terms.values()), (terms, refined_c, fake_pair)

    (face_g_total, (terms, refined_c, fake_pair)), face_g_grads = jax.value_and_grad(face_g_loss_fn, has_aux=True)(
        state.face_g_params)
    refined_c, fake_pair = jax.lax.stop_gradient((refined_c, fake_pair))

    def face_d_loss_fn(face_d_params):
        d_real, stats = apply_face_d(face_d, face_d_params, state.face_d_stats, label_c, real_c, valid)
        d_fake, stats = apply_face_d(face_d, face_d_params, stats, label_c, refined_c, valid)
        return losses.lsgan_d_loss(d_real, d_fake, weights), stats

    (face_d_loss, face_d_stats), face_d_grads = jax.value_and_grad(face_d_loss_fn, has_aux=True)(state.face_d_params)
    face_g_updates, face_g_opt_state = face_g_tx.update(face_g_grads, state.face_g_opt_state, state.face_g_params)
    face_d_updates, face_d_opt_state = face_d_tx.update(face_d_grads, state.face_d_opt_state, state.face_d_params)
    updated = state.replace(
        step=state.step + 1, face_g_params=optax.apply_updates(state.face_g_params, face_g_updates),
        face_d_params=optax.apply_updates(state.face_d_params, face_d_updates), face_d_stats=face_d_stats,
        face_g_opt_state=face_g_opt_state, face_d_opt_state=face_d_opt_state)
    metrics = dict(terms, face_g_total=face_g_total, face_d_loss=face_d_loss,
                   face_g_grad_norm=optax.tree.norm(face_g_grads), face_d_grad_norm=optax.tree.norm(face_d_grads),
                   face_g_param_norm=optax.tree.norm(updated.face_g_params), faces=jnp.sum(weights))
    if with_full_d:
        d_params, d_opt_state, d_loss, d_grads = multiscale_d_update(discriminator, d_tx, state.d_params,
                                                                     state.d_opt_state, real_pair, fake_pair)
        updated = updated.replace(d_params=d_params, d_opt_state=d_opt_state)
        metrics.update(d_loss=d_loss, d_grad_norm=optax.tree.norm(d_grads))
    return guard_nonfinite(updated, state, metrics)


@dataclasses.dataclass
class FaceTrainer:
    """The jitted, sharded pieces of the face stage (a ``stages.StageTrainer``)."""

    config: Any
    mesh: Mesh
    stage: Stage
    generator: Any
    discriminator: Any
    face_generator: Any
    face_discriminator: Any
    side: int
    lr_schedule: Any
    perceptual: Any
    state_sharding: Any = None
    init_from_fn: Any = None
    step_fns: Any = None  # {with_full_d: jitted step}
    sample_fn: Any = None

    @classmethod
    def create(cls, config, mesh: Mesh, stage: Stage) -> "FaceTrainer":
        if stage.name != "face" or stage.previous is None:
            raise ValueError(f"FaceTrainer trains the face stage after a generator stage, not {stage}")
        generator, discriminator = build_models(config, stage.generator, stage.num_d)
        face_g, face_d = build_face_models(config)
        side = face_crop_side(config, stage.height, stage.width)
        face_g_tx, face_d_tx, lr = make_optimizers(config, stage)
        d_tx = make_optimizers(config, stage)[0]
        self = cls(config, mesh, stage, generator, discriminator, face_g, face_d, side, lr,
                   make_perceptual(config, mesh))
        replicated = sharding.replicated(mesh)
        txs = dict(d_tx=d_tx, face_g_tx=face_g_tx, face_d_tx=face_d_tx)
        init = functools.partial(init_face_state, config, stage, side, face_g=face_g, face_d=face_d,
                                 discriminator=discriminator, **txs)
        self.state_sharding = jax.tree.map(lambda a: a.sharding, abstract_face_state(config, mesh, stage))
        self.init_from_fn = jax.jit(init, out_shardings=self.state_sharding)
        batch_sharding = sharding.batch_sharding(mesh)
        self.step_fns = {}
        for with_full_d in (False, True):
            step = functools.partial(face_train_step, config=config, stage=stage, side=side, with_full_d=with_full_d,
                                     generator=generator, discriminator=discriminator, face_g=face_g, face_d=face_d,
                                     **txs)
            self.step_fns[with_full_d] = jax.jit(
                step, in_shardings=(self.state_sharding, batch_sharding, replicated),
                out_shardings=(self.state_sharding, replicated), donate_argnums=(0,))
        self.sample_fn = jax.jit(functools.partial(
            render_face_pair, generator, face_g=face_g, side=side, use_prev_label=config.model.use_prev_label,
            temporal=config.model.temporal, refined_prev=config.model.face_prev == "refined",
            background_mode=config.model.background, exemplar_mode=config.model.exemplar,
            region=float(config.model.composite_region)))
        return self

    def init(self, seed: int) -> FaceState:
        raise ValueError("the face stage starts from the previous stage's final state: use init_from")

    def init_from(self, seed: int, previous: TrainState) -> FaceState:
        return self.init_from_fn(jax.random.PRNGKey(seed), previous)

    def step(self, state: FaceState, batch: Batch, step: int | None = None) -> tuple[FaceState, dict]:
        """One step; ``step`` (the host's count, to avoid a device sync) picks the face-D-alone phase."""
        step = int(state.step) if step is None else step
        with_full_d = step >= self.config.train.face.d_alone_steps
        return self.step_fns[with_full_d](state, batch.only(face_fields(self.config)), self.perceptual)

    def sample(self, state: FaceState, batch: Batch) -> jax.Array:
        """Refined frame t as the step renders it (from the refined frame t-1), for sample grids."""
        batch = batch.only(face_fields(self.config))
        h, w = batch.label.shape[1:3]
        valid = jnp.concatenate([batch.face_valid_prev, batch.face_valid], axis=0)
        corners = face_crop.crop_boxes(jnp.concatenate([batch.face_box_prev, batch.face_box], axis=0), valid,
                                       h, w, self.side)
        return self.sample_fn(state.g_params, face_g_params=state.face_g_params, batch=batch, corners=corners)[2]

    def renderer(self, state: FaceState, plate=None) -> tuple[Renderer, dict]:
        renderer = Renderer.from_config(self.config, self.generator, self.face_generator, self.side)
        return renderer, {"g": state.g_params, "face": state.face_g_params, "background": plate}

    def signature(self) -> dict:
        return model_signature(self.config, self.stage)

    def abstract_state(self):
        return abstract_face_state(self.config, self.mesh, self.stage)

    @staticmethod
    def abstract(config, mesh: Mesh, stage: Stage):
        """(config, mesh, stage) -> the state's shapes, for restores."""
        return abstract_face_state(config, mesh, stage)


def abstract_face_state(config, mesh: Mesh, stage: Stage):
    """The FaceState shapes of the face stage, replicated on ``mesh`` (for restoring)."""
    face_g, face_d = build_face_models(config)
    side = face_crop_side(config, stage.height, stage.width)
    tx = make_optimizers(config, stage)[0]
    init = functools.partial(init_face_state, config, stage, side, face_g=face_g, face_d=face_d,
                             discriminator=build_discriminator(config, stage.num_d), d_tx=tx, face_g_tx=tx,
                             face_d_tx=tx)
    previous = abstract_stage_state(config, mesh, stage.previous)
    return sharding.replicated_abstract(jax.eval_shape(init, jax.random.PRNGKey(0), previous), mesh)
