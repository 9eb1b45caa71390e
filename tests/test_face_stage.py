"""The face stage: the generator frozen bit for bit, the face networks trained on per-example crops,
examples without a face ignored, and 8 devices equal to one."""

import functools

import jax
import numpy as np
import optax

from helpers import face_batch, face_trainer, one_device_mesh, tiny_config
from edn_jax.conditioning import face_crop
from edn_jax.models import inference
from edn_jax.runtime import sharding
from edn_jax.training import face_stage


def put(batch, mesh):
    batch_sharding = sharding.batch_sharding(mesh)
    return jax.device_put(batch, batch_sharding)


def test_face_stage_keeps_the_generator_bit_identical_and_trains_the_face_networks():
    config = tiny_config("global,face", steps=2)
    mesh = one_device_mesh()
    trainer, state, previous = face_trainer(config, mesh)
    start = jax.device_get(state)
    batch = put(face_batch(), mesh)
    state, m0 = trainer.step(state, batch, 0)  # face D alone (d_alone_steps = 1)
    after_alone = jax.device_get(state)
    state, m1 = trainer.step(state, batch, 1)  # then the multiscale D too
    end = jax.device_get(state)
    for snapshot in (start, after_alone, end):
        jax.tree.map(np.testing.assert_array_equal, snapshot.g_params, previous.g_params)
    jax.tree.map(np.testing.assert_array_equal, after_alone.d_params, previous.d_params)
    # The face generator's objective is the same in both phases (full-frame GAN and feature terms
    # from the frozen multiscale D throughout); only the multiscale D's own update waits.
    assert "d_loss" not in m0 and {"g_gan", "g_feat", "face_g_gan", "face_g_l1"} <= set(m0)
    assert float(m0["faces"]) == 12  # 16 crops, 4 without a face
    assert float(m0["g_gan"]) > 0 and float(m0["g_feat"]) > 0
    assert {"d_loss", "g_gan", "g_feat", "face_g_l1"} <= set(m1) and float(m1["nonfinite"]) == 0
    changed = lambda a, b: max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))  # noqa: E731
    assert changed(end.d_params, previous.d_params) > 0
    assert changed(after_alone.face_g_params, start.face_g_params) > 0
    assert changed(after_alone.face_d_params, start.face_d_params) > 0
    assert changed(after_alone.face_d_stats, start.face_d_stats) > 0  # BatchNorm's running averages (the default)
    assert int(end.step) == 2


def test_face_step_ignores_examples_without_a_face():
    config = tiny_config("global,face", steps=2)
    mesh = one_device_mesh()
    trainer, state, _ = face_trainer(config, mesh)
    batch = face_batch()
    batch.face_valid[:] = batch.face_valid_prev[:] = False
    before = jax.device_get(state.face_g_params)
    state, metrics = trainer.step(state, put(batch, mesh), 0)
    metrics = jax.device_get(metrics)
    assert float(metrics["faces"]) == 0 and float(metrics["face_d_loss"]) == 0
    assert float(metrics["face_g_gan"]) == 0 and float(metrics["face_g_l1"]) == 0
    # The full-frame terms are there, but without a face to refine they cannot move the face generator.
    assert float(metrics["g_gan"]) > 0 and float(metrics["face_g_grad_norm"]) == 0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.face_g_params), before)


def test_face_step_on_8_devices_equals_one_device():
    """One step with both discriminators (everything the face-D-alone step computes, and the
    paste into full frames) from the same state, on 1 and on 8 devices (batch 8, per-example boxes).

    The face generator's params are compared through Adam's moments (its gradients): at
    16 px crops its bottleneck is 2x2, instance norm there makes gradients of ~1e-9 whose
    sign depends on reduction order, and Adam's first step turns any sign into +-lr.
    """
    config = tiny_config("global,face", steps=2)
    batch = face_batch(seed=1)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        trainer, state, _ = face_trainer(config, mesh, perturb_head=True)
        state, metrics = trainer.step(state, put(batch, mesh), 1)
        results.append((jax.device_get(state), jax.device_get(metrics)))
    (one, m1), (eight, m8) = results
    assert "d_loss" in m1 and "face_d_loss" in m1
    one, eight = one.replace(face_g_params=None), eight.replace(face_g_params=None)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-4, atol=2e-5)
    for key in m1:
        np.testing.assert_allclose(m1[key], m8[key], rtol=1e-4, atol=1e-5)


def test_frame_t_is_rendered_from_the_face_refined_frame_t_minus_1():
    """As the original: G renders frame t from frame t-1 with its face refined, and the gradient of
    frame t's losses reaches the face generator through that refined frame t-1. With
    ``model.face_prev="raw"`` (the earlier variant) frame t is G's output on G's own frame t-1."""
    config = tiny_config("global,face", steps=2)
    mesh = one_device_mesh()
    trainer, state, _ = face_trainer(config, mesh, perturb_head=True)
    batch = jax.tree.map(jax.numpy.asarray, face_batch(seed=3))
    batch = batch.replace(face_valid=jax.numpy.zeros_like(batch.face_valid))  # frame t itself is not refined
    n, h, w = batch.label.shape[:3]
    valid = jax.numpy.concatenate([batch.face_valid_prev, batch.face_valid])
    corners = face_crop.crop_boxes(jax.numpy.concatenate([batch.face_box_prev, batch.face_box]), valid, h, w,
                                   trainer.side)
    renderer, params = trainer.renderer(state)

    @functools.partial(jax.jit, static_argnums=1)
    def frame_t(face_g_params, refined_prev):
        return face_stage.render_face_pair(trainer.generator, state.g_params, trainer.face_generator, face_g_params,
                                           batch, corners, trainer.side, use_prev_label=False, temporal=True,
                                           refined_prev=refined_prev)[2]

    g = jax.jit(lambda label, prev: trainer.generator.apply({"params": params["g"]},
                                                            inference.generator_input(label, prev, prev, False)))
    raw_prev = g(batch.label_prev, jax.numpy.zeros_like(batch.label_prev))
    refined_prev = jax.jit(functools.partial(inference.refine_faces, renderer))(
        params["face"], raw_prev, batch.label_prev, batch.face_box_prev, batch.face_valid_prev)
    np.testing.assert_allclose(frame_t(state.face_g_params, True), g(batch.label, refined_prev), atol=2e-5)
    np.testing.assert_allclose(frame_t(state.face_g_params, False), g(batch.label, raw_prev), atol=2e-5)
    assert float(jax.numpy.abs(frame_t(state.face_g_params, True) - frame_t(state.face_g_params, False)).max()) > 1e-3

    grad_norm = lambda refined: float(optax.tree.norm(jax.jit(jax.grad(  # noqa: E731
        lambda p: jax.numpy.mean(frame_t(p, refined) ** 2)))(state.face_g_params)))
    assert grad_norm(True) > 0 and grad_norm(False) == 0
