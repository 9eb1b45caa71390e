"""The face stage: Everybody Dance Now's face GAN, trained on top of a frozen main generator.

The main generator (global or local, from the previous stage) renders frames t-1 and
t as in its own training; its params are carried in the state untouched, bit for bit.
A residual face generator refines each frame's face crop (stick-figure crop + G's
crop -> G's crop + residual), and a 70x70 PatchGAN judges (label crop, face crop)
pairs. For the first ``train.face.d_alone_steps`` only that face discriminator
judges; afterwards the refined faces are pasted back into both frames and the
temporal multiscale discriminator of the previous stage judges the full pair too
(its GAN and feature-matching terms reach the face generator through the paste),
and it keeps training. Face losses are face GAN + face perceptual (+ ``lambda_l1``
pixel L1 when set), counting only examples with a detected face.
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

from edn_jax import face_crop, losses, sharding
from edn_jax.generator_stage import (TrainState, abstract_stage_state, discriminator_input, guard_nonfinite,
                                     make_optimizers, make_perceptual, render_pair)
from edn_jax.inference import Renderer, refine_faces
from edn_jax.models.factory import build_face_models, build_models
from edn_jax.stages import Stage, face_crop_side, model_signature

FACE_KEYS = ("label_prev", "label", "image_prev", "image", "face_box_prev", "face_box", "face_valid_prev",
             "face_valid")


@flax.struct.dataclass
class FaceState:
    step: jax.Array
    g_params: Any          # the main generator's, frozen: never updated in this stage
    d_params: Any          # the temporal multiscale discriminator's, trained after d_alone_steps
    face_g_params: Any
    face_d_params: Any
    d_opt_state: Any
    face_g_opt_state: Any
    face_d_opt_state: Any
    rng: jax.Array


def init_face_state(config, side: int, rng, previous: TrainState, face_g, face_d, d_tx, face_g_tx,
                    face_d_tx) -> FaceState:
    """The face stage's start: the previous stage's G and D, fresh face networks and Adam states."""
    g_rng, d_rng, rng = jax.random.split(rng, 3)
    crop = jnp.zeros((1, side, side, 3), jnp.float32)
    face_g_params = face_g.init(g_rng, crop, crop)["params"]
    face_d_params = face_d.init(d_rng, crop, crop)["params"]
    return FaceState(step=jnp.zeros((), jnp.int32), g_params=previous.g_params, d_params=previous.d_params,
                     face_g_params=face_g_params, face_d_params=face_d_params, d_opt_state=d_tx.init(previous.d_params),
                     face_g_opt_state=face_g_tx.init(face_g_params), face_d_opt_state=face_d_tx.init(face_d_params),
                     rng=rng)


def face_train_step(state: FaceState, batch, perceptual, *, config, side: int, with_full_d: bool, generator,
                    discriminator, face_g, face_d, d_tx, face_g_tx, face_d_tx):
    """One face G, face D (and, ``with_full_d``, multiscale D) update; G frozen; NaN-guarded."""
    lambda_feat, lambda_vgg, lambda_l1 = config.loss.lambda_feat, config.loss.lambda_vgg, config.loss.lambda_l1
    fake_prev, fake = jax.lax.stop_gradient(
        render_pair(generator, state.g_params, batch["label_prev"], batch["label"], config.model.use_prev_label,
                    config.model.temporal))
    # Both frames of the pair as one batch of 2B crops: [prev rows; current rows].
    both = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
    labels, images, fakes = both(batch["label_prev"], batch["label"]), both(batch["image_prev"], batch["image"]), \
        both(fake_prev, fake)
    valid = both(batch["face_valid_prev"], batch["face_valid"])
    h, w = labels.shape[1:3]
    corners = face_crop.crop_boxes(both(batch["face_box_prev"], batch["face_box"]), valid, h, w, side)
    label_c, real_c, g_c = (face_crop.crop(x, corners, side) for x in (labels, images, fakes))
    weights = valid.astype(jnp.float32)
    n = batch["label"].shape[0]
    temporal = config.model.temporal
    real_pair = discriminator_input(batch["label_prev"], batch["label"], batch["image_prev"], batch["image"], temporal)

    def pasted_pair(refined_c):
        keep = valid[:, None, None, None]
        frames = face_crop.paste(fakes, jnp.where(keep, refined_c, g_c), corners)
        return discriminator_input(batch["label_prev"], batch["label"], frames[:n], frames[n:], temporal)

    def face_g_loss_fn(face_g_params):
        refined_c = face_g.apply({"params": face_g_params}, label_c, g_c).astype(jnp.float32)
        terms = {"face_g_gan": losses.lsgan_g_loss(face_d.apply({"params": state.face_d_params}, label_c, refined_c),
                                                   weights)}
        if perceptual is not None:
            terms["face_g_vgg"] = lambda_vgg * perceptual(refined_c, real_c, weights)
        if lambda_l1 > 0:
            terms["face_g_l1"] = lambda_l1 * losses.weighted_mean(jnp.abs(refined_c - real_c), weights)
        if with_full_d:
            d_fake = discriminator.apply({"params": state.d_params}, pasted_pair(refined_c))
            d_real = discriminator.apply({"params": state.d_params}, real_pair)
            terms["g_gan"] = losses.lsgan_g_loss(d_fake)
            terms["g_feat"] = losses.feature_matching_loss(d_real, d_fake, lambda_feat)
        return sum(terms.values()), (terms, refined_c)

    (face_g_total, (terms, refined_c)), face_g_grads = jax.value_and_grad(face_g_loss_fn, has_aux=True)(
        state.face_g_params)
    refined_c = jax.lax.stop_gradient(refined_c)

    def face_d_loss_fn(face_d_params):
        d_real = face_d.apply({"params": face_d_params}, label_c, real_c)
        d_fake = face_d.apply({"params": face_d_params}, label_c, refined_c)
        return losses.lsgan_d_loss(d_real, d_fake, weights)

    face_d_loss, face_d_grads = jax.value_and_grad(face_d_loss_fn)(state.face_d_params)
    face_g_updates, face_g_opt_state = face_g_tx.update(face_g_grads, state.face_g_opt_state, state.face_g_params)
    face_d_updates, face_d_opt_state = face_d_tx.update(face_d_grads, state.face_d_opt_state, state.face_d_params)
    updated = state.replace(
        step=state.step + 1, face_g_params=optax.apply_updates(state.face_g_params, face_g_updates),
        face_d_params=optax.apply_updates(state.face_d_params, face_d_updates),
        face_g_opt_state=face_g_opt_state, face_d_opt_state=face_d_opt_state)
    metrics = dict(terms, face_g_total=face_g_total, face_d_loss=face_d_loss,
                   face_g_grad_norm=optax.tree.norm(face_g_grads), face_d_grad_norm=optax.tree.norm(face_d_grads),
                   face_g_param_norm=optax.tree.norm(updated.face_g_params), faces=jnp.sum(weights))
    if with_full_d:
        fake_pair = jax.lax.stop_gradient(pasted_pair(refined_c))

        def d_loss_fn(d_params):
            return losses.lsgan_d_loss(discriminator.apply({"params": d_params}, real_pair),
                                       discriminator.apply({"params": d_params}, fake_pair))

        d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
        d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
        updated = updated.replace(d_params=optax.apply_updates(state.d_params, d_updates), d_opt_state=d_opt_state)
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
        generator, discriminator = build_models(config, stage.generator)
        face_g, face_d = build_face_models(config)
        side = face_crop_side(config, stage.height, stage.width)
        face_g_tx, face_d_tx, lr = make_optimizers(config, stage)
        d_tx = make_optimizers(config, stage)[0]
        self = cls(config, mesh, stage, generator, discriminator, face_g, face_d, side, lr,
                   make_perceptual(config, mesh))
        replicated = sharding.replicated(mesh)
        txs = dict(d_tx=d_tx, face_g_tx=face_g_tx, face_d_tx=face_d_tx)
        init = functools.partial(init_face_state, config, side, face_g=face_g, face_d=face_d, **txs)
        self.state_sharding = jax.tree.map(lambda a: a.sharding, abstract_face_state(config, mesh, stage))
        self.init_from_fn = jax.jit(init, out_shardings=self.state_sharding)
        batch_sharding = sharding.batch_sharding(mesh)
        self.step_fns = {}
        for with_full_d in (False, True):
            step = functools.partial(face_train_step, config=config, side=side, with_full_d=with_full_d,
                                     generator=generator, discriminator=discriminator, face_g=face_g, face_d=face_d,
                                     **txs)
            self.step_fns[with_full_d] = jax.jit(
                step, in_shardings=(self.state_sharding, batch_sharding, replicated),
                out_shardings=(self.state_sharding, replicated), donate_argnums=(0,))
        self.sample_fn = jax.jit(functools.partial(_sample, Renderer.from_config(config, generator, face_g, side)))
        return self

    def init(self, seed: int) -> FaceState:
        raise ValueError("the face stage starts from the previous stage's final state: use init_from")

    def init_from(self, seed: int, previous: TrainState) -> FaceState:
        return self.init_from_fn(jax.random.PRNGKey(seed), previous)

    def step(self, state: FaceState, batch, step: int | None = None) -> tuple[FaceState, dict]:
        """One step; ``step`` (the host's count, to avoid a device sync) picks the face-D-alone phase."""
        step = int(state.step) if step is None else step
        with_full_d = step >= self.config.train.face.d_alone_steps
        return self.step_fns[with_full_d](state, {k: batch[k] for k in FACE_KEYS}, self.perceptual)

    def sample(self, state: FaceState, batch) -> jax.Array:
        return self.sample_fn(state.g_params, state.face_g_params, batch["label_prev"], batch["label"],
                              batch["face_box"], batch["face_valid"])

    def renderer(self, state: FaceState) -> tuple[Renderer, dict]:
        renderer = Renderer.from_config(self.config, self.generator, self.face_generator, self.side)
        return renderer, {"g": state.g_params, "face": state.face_g_params}

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
    init = functools.partial(init_face_state, config, side, face_g=face_g, face_d=face_d, d_tx=tx, face_g_tx=tx,
                             face_d_tx=tx)
    previous = abstract_stage_state(config, mesh, stage.previous)
    return sharding.replicated_abstract(jax.eval_shape(init, jax.random.PRNGKey(0), previous), mesh)


def _sample(renderer: Renderer, g_params, face_g_params, label_prev, label, face_box, face_valid):
    _, fake = render_pair(renderer.generator, g_params, label_prev, label, renderer.use_prev_label, renderer.temporal)
    return refine_faces(renderer, face_g_params, fake, label, face_box, face_valid)
