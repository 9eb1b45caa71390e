"""Staged training: the plan, the local stage's start from the global one, the face stage
(generator frozen bit for bit, per-example crops, batch > 1, 8 devices), the end-to-end flow,
and rendering with the face residual."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from configs import default, tiny
from edn_jax import face_crop, inference, main, train
from edn_jax.errors import EdnError
from edn_jax.face_stage import FaceTrainer

SIZE = 32
SIDE = 16  # face crop at 32x32 (the minimum of face_crop_size)


def staged_config(stages="global,local,face"):
    config = tiny.get_config()
    config.train.stages = stages
    config.loss.lambda_l1 = 10.0
    config.train.num_steps, config.train.decay_steps = 2, 1
    config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 1
    config.train.evaluate_holdout = False
    return config


def face_batch(batch=8, size=SIZE, seed=0):
    """Random frames with per-example face boxes in different places; two examples have no face."""
    rng = np.random.default_rng(seed)
    out = {k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
           for k in ("label_prev", "label", "image_prev", "image")}
    for suffix in ("_prev", ""):
        x0 = rng.uniform(0, size - 12, batch)
        y0 = rng.uniform(0, size - 12, batch)
        out["face_box" + suffix] = np.stack([x0, y0, x0 + 12, y0 + 12], -1).astype(np.float32)
        valid = np.ones(batch, bool)
        valid[[1, batch - 2]] = False
        out["face_valid" + suffix] = valid
    return out


def put(batch, mesh):
    sharding = NamedSharding(mesh, P(train.DATA_AXIS))
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def test_plan_stages_sizes_steps_and_order():
    config = staged_config()
    config.train.height, config.train.width = 256, 512
    stages = train.plan_stages(config)
    assert [(s.name, s.height, s.width, s.generator) for s in stages] == [
        ("global", 256, 512, "global"), ("local", 512, 1024, "local"), ("face", 512, 1024, "local")]
    assert [s.previous.name if s.previous else None for s in stages] == [None, "global", "local"]
    assert stages[2].title == "stage 3/3 (face, 512x1024)"
    face_only = train.plan_stages(staged_config("global,face"))
    assert [(s.name, s.height, s.generator) for s in face_only] == [("global", SIZE, "global"), ("face", SIZE, "global")]
    assert train.face_crop_side(default.get_config(), 512, 1024) == 128


@pytest.mark.parametrize("field,value,fragment", [
    ("train.stages", "local,global", "out of order"), ("train.stages", "global,global", "out of order"),
    ("train.stages", "face", "out of order"), ("train.stages", "global,hands", "hands is not a stage"),
    ("train.stages", " ", "names no known stage"), ("model.local_ngf", 8, r"must be 2 \* model.local_ngf"),
    ("train.local.fix_global_steps", 5, "fix_global_steps"), ("train.face.d_alone_steps", 3, "d_alone_steps"),
    ("train.face.num_steps", 0, "train.face.num_steps"), ("model.face_crop", 12, "face_crop"),
])
def test_bad_stage_values(tmp_path, field, value, fragment):
    config = staged_config()
    *path, name = field.split(".")
    section = config
    for part in path:
        section = section[part]
    section[name] = value
    with pytest.raises(EdnError, match=fragment):
        main.run(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_local_stage_starts_from_global_weights_and_first_trains_only_its_branch():
    config = staged_config("global,local")
    mesh = one_device_mesh()
    global_stage, local_stage = train.plan_stages(config)
    previous = train.Trainer.create(config, mesh, global_stage).init(3)
    trainer = train.Trainer.create(config, mesh, local_stage)
    state = trainer.init_from(0, previous)
    prev = jax.device_get(previous)
    start = jax.device_get(state)
    expected = {k: v for k, v in prev.g_params.items() if k != "head"}
    jax.tree.map(np.testing.assert_array_equal, start.g_params["global_generator"], expected)
    jax.tree.map(np.testing.assert_array_equal, start.d_params, prev.d_params)

    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(-1, 1, (8, 2 * SIZE, 2 * SIZE, 3)).astype(np.float32)
             for k in ("label_prev", "label", "image_prev", "image")}
    state, _ = trainer.step(state, put(batch, mesh))  # step 0 < fix_global_steps = 1: the global part is fixed
    after_fixed = jax.device_get(state.g_params)
    jax.tree.map(np.testing.assert_array_equal, after_fixed["global_generator"], expected)
    assert not np.array_equal(after_fixed["stem"]["kernel"], start.g_params["stem"]["kernel"])
    state, _ = trainer.step(state, put(batch, mesh))  # then everything learns
    after = jax.device_get(state.g_params)["global_generator"]
    assert not np.array_equal(after["stem"]["kernel"], expected["stem"]["kernel"])


def _face_trainer(config, mesh, perturb_head=False):
    """(face trainer, its first state, the frozen generator stage's state on the host).

    ``perturb_head``: the face generator's zero-initialised output conv made non-zero, so
    gradients reach all its layers from the first step (and its output is not the identity).
    """
    stages = train.plan_stages(config)
    previous = train.Trainer.create(config, mesh, stages[0]).init(5)
    trainer = FaceTrainer.create(config, mesh, stages[1])
    state = trainer.init_from(0, previous)
    if perturb_head:
        head = state.face_g_params["head"]
        head = {"kernel": head["kernel"] + 0.05, "bias": head["bias"] + 0.1}
        state = state.replace(face_g_params=dict(state.face_g_params, head=head))
    return trainer, state, jax.device_get(previous)


def one_device_mesh(devices=None):
    """A 1-device mesh: for tests whose point is not sharding (8 fake devices on 2 cores compile slowly)."""
    return Mesh(np.array(jax.devices()[:1]), (train.DATA_AXIS,))


def test_face_stage_keeps_the_generator_bit_identical_and_trains_the_face_networks():
    config = staged_config("global,face")
    mesh = one_device_mesh()
    trainer, state, previous = _face_trainer(config, mesh)
    start = jax.device_get(state)
    batch = put(face_batch(), mesh)
    state, m0 = trainer.step(state, batch, 0)  # face D alone (d_alone_steps = 1)
    after_alone = jax.device_get(state)
    state, m1 = trainer.step(state, batch, 1)  # then the multiscale D too
    end = jax.device_get(state)
    for snapshot in (start, after_alone, end):
        jax.tree.map(np.testing.assert_array_equal, snapshot.g_params, previous.g_params)
    jax.tree.map(np.testing.assert_array_equal, after_alone.d_params, previous.d_params)
    assert "d_loss" not in m0 and "g_gan" not in m0 and float(m0["faces"]) == 12  # 16 crops, 4 without a face
    assert {"d_loss", "g_gan", "g_feat", "face_g_l1"} <= set(m1) and float(m1["nonfinite"]) == 0
    changed = lambda a, b: max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))  # noqa: E731
    assert changed(end.d_params, previous.d_params) > 0
    assert changed(after_alone.face_g_params, start.face_g_params) > 0
    assert changed(after_alone.face_d_params, start.face_d_params) > 0
    assert int(end.step) == 2


def test_face_step_ignores_examples_without_a_face():
    config = staged_config("global,face")
    mesh = one_device_mesh()
    trainer, state, _ = _face_trainer(config, mesh)
    batch = face_batch()
    batch["face_valid"][:] = batch["face_valid_prev"][:] = False
    before = jax.device_get(state.face_g_params)
    state, metrics = trainer.step(state, put(batch, mesh), 0)
    metrics = jax.device_get(metrics)
    assert float(metrics["faces"]) == 0 and float(metrics["face_g_total"]) == 0 and float(metrics["face_d_loss"]) == 0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.face_g_params), before)


def test_face_step_on_8_devices_equals_one_device():
    """One step with both discriminators (everything the face-D-alone step computes, and the
    paste into full frames) from the same state, on 1 and on 8 devices (batch 8, per-example boxes).

    The face generator's params are compared through Adam's moments (its gradients): at
    16 px crops its bottleneck is 2x2, instance norm there makes gradients of ~1e-9 whose
    sign depends on reduction order, and Adam's first step turns any sign into +-lr.
    """
    config = staged_config("global,face")
    batch = face_batch(seed=1)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = train.make_mesh(devices)
        trainer, state, _ = _face_trainer(config, mesh, perturb_head=True)
        state, metrics = trainer.step(state, put(batch, mesh), 1)
        results.append((jax.device_get(state), jax.device_get(metrics)))
    (one, m1), (eight, m8) = results
    assert "d_loss" in m1 and "face_d_loss" in m1
    one, eight = one.replace(face_g_params=None), eight.replace(face_g_params=None)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-4, atol=2e-5)
    for key in m1:
        np.testing.assert_allclose(m1[key], m8[key], rtol=1e-4, atol=1e-5)


def test_render_chunk_with_face_equals_a_per_frame_loop():
    config = staged_config("global,face")
    mesh = train.make_mesh(jax.devices()[:1])
    trainer, state, _ = _face_trainer(config, mesh, perturb_head=True)
    renderer, params = trainer.renderer(state)
    assert renderer.has_face and renderer.face_crop == SIDE
    b = face_batch(batch=5, seed=2)
    labels, boxes, valid = jnp.asarray(b["label"]), jnp.asarray(b["face_box"]), jnp.asarray(b["face_valid"])
    scanned, carry = inference.render_chunk(renderer, params, labels, boxes, valid, inference.initial_carry(SIZE, SIZE))
    plain, _ = inference.render_chunk(renderer, params, labels, boxes, valid, inference.initial_carry(SIZE, SIZE),
                                      apply_face=False)

    prev = jnp.zeros((1, SIZE, SIZE, 3))
    for t in range(5):
        out = trainer.generator.apply({"params": params["g"]}, inference.generator_input(labels[t:t + 1], prev, prev,
                                                                                           False))
        side = SIDE
        corner = face_crop.crop_boxes(boxes[t:t + 1], valid[t:t + 1], SIZE, SIZE, side)[0]
        y, x = int(corner[0]), int(corner[1])
        expected = np.array(out[0])
        if bool(valid[t]):
            refined = trainer.face_generator.apply({"params": params["face"]}, labels[t:t + 1, y:y + side, x:x + side],
                                                   out[:, y:y + side, x:x + side])
            expected[y:y + side, x:x + side] = np.asarray(refined[0])
        np.testing.assert_allclose(np.asarray(scanned[t]), expected, atol=2e-5)
        np.testing.assert_allclose(np.asarray(plain[t]), np.asarray(out[0]), atol=2e-5)
        # The carry is the generator's own output; only the face crop of a frame with a face differs.
        inside = np.zeros((SIZE, SIZE), bool)
        inside[y:y + side, x:x + side] = bool(valid[t])
        np.testing.assert_array_equal(np.asarray(scanned[t])[~inside], np.asarray(plain[t])[~inside])
        if bool(valid[t]):
            assert np.abs(np.asarray(scanned[t])[inside] - np.asarray(plain[t])[inside]).max() > 1e-3
        prev = out
    np.testing.assert_allclose(np.asarray(carry[0]), np.asarray(prev), atol=2e-5)


def test_staged_training_end_to_end_then_rerun_skips_finished_stages(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "make_mesh", one_device_mesh)
    config = staged_config("global,local,face")
    config.train.evaluate_holdout = True
    result = train.train_and_evaluate(config, str(tmp_path))
    out = capsys.readouterr().out
    for line in ("stage 1/3 (global, 32x32): training steps 1..2",
                 "stage 2/3 (local, 64x64): starting from the global stage's final checkpoint (step 2)",
                 "stage 3/3 (face, 64x64): starting from the local stage's final checkpoint (step 2)",
                 "stage 3/3 (face, 64x64): held-out face crops"):
        assert line in out, line
    assert [s["stage"] for s in result["stages"]] == ["global", "local", "face"]
    for stage in ("global", "local", "face"):
        assert sorted(os.listdir(tmp_path / "checkpoints" / stage)) == ["1", "2"]
        assert os.listdir(tmp_path / "tensorboard" / stage)
        assert sorted(os.listdir(tmp_path / "samples" / stage)) == ["step_00000001.png", "step_00000002.png"]
    holdout = result["holdout"]
    assert {"face_l1_generated", "face_l1_without_face", "face_lpips_generated"} <= set(holdout)
    # The face stage's generator is the local stage's final one, bit for bit.
    local = train.restore_final(str(tmp_path), config, train.make_mesh(), train.plan_stages(config)[1])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(result["state"].g_params), jax.device_get(local.g_params))

    again = train.train_and_evaluate(config, str(tmp_path))
    out = capsys.readouterr().out
    assert out.count("already trained") == 3 and all(s["skipped"] for s in again["stages"])


def test_paper_parameter_counts_per_stage():
    """The paper config's networks, counted from shapes (tools/param_counts.py prints the same)."""
    from tools import param_counts

    counts = param_counts.count(default.get_config())
    assert counts == {
        "global": {"size": [256, 512], "generator": 182_431_299, "discriminator": 5_546_114, "discriminator_scales": 2},
        "local": {"size": [512, 1024], "generator": 182_694_051, "discriminator": 5_546_114, "discriminator_scales": 2},
        "face": {"crop": 128, "face_generator": 26_717_763, "face_discriminator": 2_766_913},
    }
