"""The global and local stages' step: one step per variant, the single-frame baseline, remat, sharded ==
single-device, the NaN guard, and the local stage's start from the global one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import one_device_mesh, tiny_config
from edn_jax import stages
from edn_jax.data.batch import IMAGE_FIELDS, Batch
from edn_jax.models import GlobalGenerator, checks, inference
from edn_jax.runtime import sharding
from edn_jax.training import generator_stage, losses
from edn_jax.training.generator_stage import GeneratorTrainer

SIZE = 32


def random_batch(batch=8, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return Batch(**{k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32) for k in IMAGE_FIELDS})


def put(batch, mesh):
    batch_sharding = sharding.batch_sharding(mesh)
    return jax.device_put(batch, batch_sharding)


@pytest.mark.parametrize("variant", [
    {"perceptual": "vgg16"},
    {"perceptual": "none", "use_prev_label": True},
    {"perceptual": "none", "dtype": "bfloat16"},
    {"perceptual": "none", "lambda_l1": 100.0},
])
def test_one_train_step_per_variant(variant):
    config = tiny_config(perceptual=variant.get("perceptual", "none"))
    config.model.use_prev_label = variant.get("use_prev_label", False)
    config.model.dtype = variant.get("dtype", "float32")
    config.loss.lambda_l1 = variant.get("lambda_l1", 0.0)
    mesh = sharding.make_mesh()
    trainer = GeneratorTrainer.create(config, mesh)
    state = trainer.init(0)
    before = jax.device_get(state.g_params)
    batch = random_batch()
    if trainer.perceptual is not None:  # the VGG term the step should compute, from the same frames
        fake_prev, fake = trainer.sample_fn(state.g_params, batch.label_prev, batch.label)
        vgg = float(trainer.perceptual(fake, batch.image) + trainer.perceptual(fake_prev, batch.image_prev))
    state, metrics = trainer.step(state, put(batch, mesh))
    metrics = jax.device_get(metrics)
    assert int(state.step) == 1 and metrics["nonfinite"] == 0
    assert all(np.isfinite(v) for v in metrics.values())
    assert ("g_vgg" in metrics) == (variant.get("perceptual") == "vgg16")
    if "g_vgg" in metrics:  # the global stage halves the term (the original's loss_G_VGG *= 0.5)
        assert generator_stage.vgg_weight(config, trainer.stage) == 0.5 * config.loss.lambda_vgg == 5.0
        np.testing.assert_allclose(metrics["g_vgg"], 5.0 * vgg, rtol=1e-4)
    assert ("g_l1" in metrics) == (config.loss.lambda_l1 > 0)
    if "g_l1" in metrics:  # random images in [-1, 1] vs tanh outputs near 0: mean |diff| is about 0.5 per frame
        assert 50 < metrics["g_l1"] < 150
    changed = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), before,
                           jax.device_get(state.g_params))
    assert max(jax.tree.leaves(changed)) > 0


def test_single_frame_pix2pixhd_baseline_ignores_the_previous_frame():
    """model.temporal=False is the paper's pix2pixHD baseline: G sees the stick figure alone and D
    judges single frames, so a frame's render cannot depend on anything before it."""
    config = tiny_config()
    config.model.temporal = False
    mesh = sharding.make_mesh(jax.devices()[:1])
    trainer = GeneratorTrainer.create(config, mesh)
    state = trainer.init(0)
    in_channels = lambda tree: {a.shape[2] for a in jax.tree.leaves(tree) if a.ndim == 4}  # noqa: E731
    assert 3 in in_channels(state.g_params) and 6 not in in_channels(state.g_params)
    assert 6 in in_channels(state.d_params) and 12 not in in_channels(state.d_params)
    batch = random_batch(batch=2)
    state, metrics = trainer.step(state, put(batch, mesh))
    assert float(metrics["nonfinite"]) == 0 and np.isfinite(float(metrics["g_total"]))

    labels = jnp.asarray(batch.label)
    alone = trainer.generator.apply({"params": state.g_params}, labels)
    renderer, params = trainer.renderer(state)
    assert not renderer.model.temporal
    boxes, valid = jnp.zeros((2, 4)), jnp.zeros((2,), bool)
    carry = (jnp.asarray(batch.image[:1]), jnp.asarray(batch.label_prev[:1]))  # a non-blank history
    sequential, _ = inference.render_chunk(renderer, params, labels, boxes, valid, carry)
    np.testing.assert_allclose(np.asarray(sequential), np.asarray(alone), atol=1e-5)
    _, fake = trainer.sample_fn(state.g_params, jnp.asarray(batch.label_prev) * 0 + 0.5, labels)
    np.testing.assert_allclose(np.asarray(fake), np.asarray(alone), atol=1e-5)

    temporal = GeneratorTrainer.create(tiny_config(), mesh)  # the paper's model: the history matters
    t_state = temporal.init(0)
    t_renderer, t_params = temporal.renderer(t_state)
    blank = inference.initial_carry(32, 32)
    with_history, _ = inference.render_chunk(t_renderer, t_params, labels, boxes, valid, carry)
    from_blank, _ = inference.render_chunk(t_renderer, t_params, labels, boxes, valid, blank)
    assert float(jnp.abs(with_history[0] - from_blank[0]).max()) > 1e-3


def test_remat_modes_recompute_the_same_values():
    """train.remat trades compute for memory only. The checkpointed pieces give the plain pieces'
    values and gradients (VGG's perceptual loss, a generator pass), and the step really
    rematerialises them: none of them under "none", the 2 VGG passes under "perceptual", and
    also the 2 generator passes under "full" (counted in the traced step, nothing compiled)."""
    rng = np.random.default_rng(0)
    x, y = (rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32) for _ in range(2))
    perceptual = losses.make_perceptual_loss("vgg16")
    plain, remat = (jax.jit(jax.value_and_grad(lambda x, r=r: perceptual(x, y, remat=r))) for r in (False, True))
    for a, b in zip(plain(x), remat(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    generator = GlobalGenerator(output_nc=3, ngf=4, n_downsampling=1, n_blocks=1)
    inputs = np.concatenate([x, y], axis=-1)
    params = jax.jit(generator.init)(jax.random.key(0), inputs)
    grad = lambda g: jax.jit(jax.grad(lambda p: jnp.sum(g.apply(p, inputs) ** 2)))(params)  # noqa: E731
    rematerialised = generator_stage.RematApply(generator)
    for a, b in zip(jax.tree.leaves(grad(generator)), jax.tree.leaves(grad(rematerialised)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    mesh, batch, counts = sharding.make_mesh(jax.devices()[:1]), random_batch(batch=1), {}
    for mode in checks.REMAT_MODES:
        trainer = GeneratorTrainer.create(tiny_config(perceptual="vgg16", batch_size=1, remat=mode), mesh)
        jaxpr = str(jax.make_jaxpr(trainer.step_fn)(trainer.abstract_state(), batch, trainer.perceptual))
        counts[mode] = jaxpr.count("remat2[")  # jax.checkpoint's primitive once differentiated
    assert counts == {"none": 0, "perceptual": 2, "full": 4}, counts


def test_sharded_step_equals_single_device_step():
    """8 devices with a batch of 1 each compute the step of 1 device with the batch of 8.

    After one step everything agrees, Adam's moments (the gradients) included. After the second,
    the params and metrics do; the second step's moments are not compared: Adam's first update
    is about lr * sign(g), so gradients within rounding of 0 (reduced in a different order on 8
    devices) move a param by +-lr, and the VGG loss carries that into every gradient of step 2.
    Leaves are compared by their norm: summed in another order, a few elements of a gradient
    near 0 differ by more than any elementwise tolerance would allow.
    """
    config = tiny_config(perceptual="vgg16")
    batch = random_batch()
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        trainer = GeneratorTrainer.create(config, mesh)
        state = trainer.init(0)
        states = []
        for step in range(2):
            state, metrics = trainer.step(state, put(batch, mesh))
            jax.block_until_ready(state)
            states.append(jax.device_get(state))
        results.append((states, jax.device_get(metrics)))
    assert len(jax.devices()) == 8
    (one, m1), (eight, m8) = results
    lr = config.train.learning_rate

    def close(a, b, where, flips: int = 0):
        """Equal up to float32 reduction order: 0.5% of the leaf's norm (a gradient summed in another
        order through the VGG loss differs by ~0.1% on some CPUs; an unaveraged one by 700%), or
        for params after ``flips`` steps, no element more than 2 * lr per step apart (Adam's sign)."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        error = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-8)
        assert error < 5e-3 or np.abs(a - b).max() <= 2 * lr * flips * (1 + 1e-3), \
            f"{where}: relative difference {error:.2e}"

    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one[0]), jax.tree.leaves(eight[0]), strict=True):
        where = jax.tree_util.keystr(path)
        close(a, b, f"step 1 {where}", flips=1 if where.startswith((".g_params", ".d_params")) else 0)
    for name in ("g_params", "d_params"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(getattr(one[1], name)),
                                jax.tree.leaves(getattr(eight[1], name)), strict=True):
            close(a, b, f"step 2 {name}{jax.tree_util.keystr(path)}", flips=2)
    for key in m1:
        # Step 2's gradients carry step 1's sign flips (above): their norms agree to 2%.
        np.testing.assert_allclose(m1[key], m8[key], rtol=2e-2 if key.endswith("grad_norm") else 1e-4, atol=1e-5,
                                   err_msg=key)


def test_nonfinite_step_leaves_params_untouched():
    config = tiny_config()
    mesh = sharding.make_mesh()
    trainer = GeneratorTrainer.create(config, mesh)
    state = trainer.init(0)
    before = jax.device_get((state.g_params, state.d_params, state.g_opt_state))
    batch = random_batch()
    batch.image[0, 0, 0, 0] = np.nan
    state, metrics = trainer.step(state, put(batch, mesh))
    assert float(metrics["nonfinite"]) == 1.0 and int(state.step) == 1
    after = jax.device_get((state.g_params, state.d_params, state.g_opt_state))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_local_stage_starts_from_global_weights_and_first_trains_only_its_branch():
    config = tiny_config("global,local", steps=2)
    mesh = one_device_mesh()
    global_stage, local_stage = stages.plan_stages(config)
    previous = GeneratorTrainer.create(config, mesh, global_stage).init(3)
    trainer = GeneratorTrainer.create(config, mesh, local_stage)
    state = trainer.init_from(0, previous)
    prev = jax.device_get(previous)
    start = jax.device_get(state)
    expected = {k: v for k, v in prev.g_params.items() if k != "head"}
    jax.tree.map(np.testing.assert_array_equal, start.g_params["global_generator"], expected)
    jax.tree.map(np.testing.assert_array_equal, start.d_params, prev.d_params)

    rng = np.random.default_rng(0)
    batch = Batch(**{k: rng.uniform(-1, 1, (8, 2 * SIZE, 2 * SIZE, 3)).astype(np.float32) for k in IMAGE_FIELDS})
    state, _ = trainer.step(state, put(batch, mesh))  # step 0 < fix_global_steps = 1: the global part is fixed
    after_fixed = jax.device_get(state.g_params)
    jax.tree.map(np.testing.assert_array_equal, after_fixed["global_generator"], expected)
    assert not np.array_equal(after_fixed["stem"]["kernel"], start.g_params["stem"]["kernel"])
    state, _ = trainer.step(state, put(batch, mesh))  # then everything learns
    after = jax.device_get(state.g_params)["global_generator"]
    assert not np.array_equal(after["stem"]["kernel"], expected["stem"]["kernel"])




def test_each_stage_has_its_own_number_of_discriminator_scales():
    """The paper's 2 scales in the global stage and 3 in the local and face stages: the new stage's D
    takes the scales the previous D has (pix2pixHD loads them into the bigger D) and starts the
    third fresh. The VGG term is at full weight once the generator is the LocalEnhancer."""
    from edn_jax.training.face_stage import FaceTrainer

    config = tiny_config("global,local,face", steps=2)
    config.model.num_d_local = config.model.num_d_face = 3
    mesh = one_device_mesh()
    global_stage, local_stage, face_stage = stages.plan_stages(config)
    assert (global_stage.num_d, local_stage.num_d, face_stage.num_d) == (2, 3, 3)
    previous = jax.device_get(GeneratorTrainer.create(config, mesh, global_stage).init(3))
    local = jax.device_get(GeneratorTrainer.create(config, mesh, local_stage).init_from(0, previous))
    assert sorted(previous.d_params) == ["scale_0", "scale_1"] and sorted(local.d_params) == ["scale_0", "scale_1",
                                                                                              "scale_2"]
    for name in ("scale_0", "scale_1"):
        jax.tree.map(np.testing.assert_array_equal, local.d_params[name], previous.d_params[name])
    assert float(np.abs(local.d_params["scale_2"]["conv_0"]["kernel"]).max()) > 0  # fresh, not zeros
    assert local.d_opt_state[0].mu["scale_2"]["conv_0"]["kernel"].shape == local.d_params["scale_2"]["conv_0"][
        "kernel"].shape
    face = jax.device_get(FaceTrainer.create(config, mesh, face_stage).init_from(1, local))
    jax.tree.map(np.testing.assert_array_equal, face.d_params, local.d_params)
    assert stages.model_signature(config, local_stage)["model"]["num_d_local"] == 3
    assert generator_stage.vgg_weight(config, local_stage) == config.loss.lambda_vgg
    config.loss.global_vgg_scale = 1.0  # the earlier variant: the same weight in every stage
    assert generator_stage.vgg_weight(config, global_stage) == config.loss.lambda_vgg


def test_frame_t_learns_through_the_generated_previous_frame():
    """Frame t is rendered from G's own output for t-1, and its loss reaches G through that
    output too (the original trains without cutting the gradient there)."""
    config = tiny_config()
    trainer = GeneratorTrainer.create(config, one_device_mesh())
    params, g = trainer.init(0).g_params, trainer.generator
    batch = random_batch(batch=2)
    label_prev, label = jnp.asarray(batch.label_prev), jnp.asarray(batch.label)

    def frame_t_loss(p, cut):
        if not cut:
            return jnp.mean(generator_stage.render_pair(g, p, label_prev, label, False)[1] ** 2)
        blank = jnp.zeros_like(label_prev)
        prev = g.apply({"params": p}, inference.generator_input(label_prev, blank, blank, False))
        fake = g.apply({"params": p}, inference.generator_input(label, jax.lax.stop_gradient(prev), label_prev, False))
        return jnp.mean(fake ** 2)

    full, cut = (jax.grad(frame_t_loss)(params, c) for c in (False, True))
    np.testing.assert_allclose(frame_t_loss(params, False), frame_t_loss(params, True), rtol=1e-6)  # same frame t
    through_prev = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), full, cut)
    size = jax.tree.map(lambda a: float(jnp.abs(a).max()), full)
    assert max(jax.tree.leaves(through_prev)) > 1e-3 * max(jax.tree.leaves(size))


def test_previous_frame_noise_reaches_frame_t_only_and_changes_the_step():
    """``train.prev_noise`` perturbs the G(x_{t-1}) that frame t is rendered from, not frame t-1 itself."""
    config = tiny_config()
    trainer = GeneratorTrainer.create(config, one_device_mesh())
    params, g = trainer.init(0).g_params, trainer.generator
    batch = random_batch(batch=2)
    label_prev, label = jnp.asarray(batch.label_prev), jnp.asarray(batch.label)
    prev, fake = generator_stage.render_pair(g, params, label_prev, label, False)
    noise = 0.2 * jax.random.normal(jax.random.PRNGKey(0), label.shape)
    noisy_prev, noisy = generator_stage.render_pair(g, params, label_prev, label, False, prev_noise=noise)
    np.testing.assert_array_equal(prev, noisy_prev)
    assert float(jnp.abs(noisy - fake).mean()) > 1e-4
    by_hand = g.apply({"params": params}, inference.generator_input(label, prev + noise, label_prev, False))
    np.testing.assert_allclose(noisy, by_hand, atol=1e-5)
    # Through the step: the same state and batch give other metrics with the noise on.
    noisy_config = tiny_config(prev_noise=0.2)
    noisy_trainer = GeneratorTrainer.create(noisy_config, one_device_mesh())
    m_plain = trainer.step(trainer.init(0), batch)[1]
    m_noisy = noisy_trainer.step(noisy_trainer.init(0), batch)[1]
    assert float(m_plain["g_total"]) != float(m_noisy["g_total"])
