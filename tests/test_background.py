"""The background plate: recovered from footage with a moving person, and composited under G's mask."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import one_device_mesh, staged_config

from edn_jax import background, checkpoints, dataset, inference, train
from edn_jax.models import factory
from edn_jax.pose import layout

H, W = 40, 64


def _walker(frames=12):
    """A fixed random scene with a person-sized block walking across it, and the block's keypoints."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    out, poses = [], []
    for t in range(frames):
        x = 4 + t * 4.5
        frame = scene.copy()
        frame[8:32, int(x):int(x) + 8] = (250, 20, 20)
        pose = layout.empty_pose()
        pose[:4] = [(x, 10, 1), (x + 7, 10, 1), (x, 30, 1), (x + 7, 30, 1)]
        out.append(frame)
        poses.append(pose)
    return scene, np.stack(out), np.stack(poses)


def test_the_plate_is_the_scene_behind_a_moving_person():
    scene, frames, poses = _walker()
    plate = background.plate(frames, poses)
    assert plate.dtype == np.uint8 and plate.shape == (H, W, 3)
    np.testing.assert_array_equal(plate, scene)  # every pixel is free of the person in enough frames
    # The plain per-pixel median would keep a smear of the person where it lingers; a person who
    # never moves stays in the plate (nothing shows what is behind it).
    still = np.repeat(frames[:1], 12, axis=0)
    np.testing.assert_array_equal(background.plate(still, np.repeat(poses[:1], 12, axis=0)), frames[0])


def test_composite_takes_the_plate_where_the_mask_is_off_and_the_colours_where_it_is_on():
    colours = jnp.full((1, 4, 4, 3), 0.5)
    plate = jnp.full((1, 4, 4, 3), -0.25)
    off = jnp.concatenate([colours, -jnp.ones((1, 4, 4, 1))], axis=-1)
    on = jnp.concatenate([colours, jnp.ones((1, 4, 4, 1))], axis=-1)
    half = jnp.concatenate([colours, jnp.zeros((1, 4, 4, 1))], axis=-1)
    np.testing.assert_allclose(background.composite(off, plate), plate)
    np.testing.assert_allclose(background.composite(on, plate), colours)
    np.testing.assert_allclose(background.composite(half, plate), 0.5 * (colours + plate))


def test_a_composite_generator_renders_the_plate_where_its_mask_is_off():
    config = staged_config("global")
    config.model.background = "composite"
    generator = factory.build_generator(config)
    image = jnp.zeros((1, 32, 32, 3))
    plate = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)
    g_in = inference.generator_input(image, image, image, False, True, plate)
    assert g_in.shape[-1] == factory.generator_channels(config) == 9
    params = generator.init(jax.random.PRNGKey(0), g_in)["params"]
    assert params["head"]["kernel"].shape[-1] == 4
    # The mask channel forced off: every frame is the plate, whatever the stick figure.
    head = {"kernel": params["head"]["kernel"].at[..., 3].set(0), "bias": params["head"]["bias"].at[3].set(-30.0)}
    params = dict(params, head=head)
    renderer = inference.Renderer(generator, background="composite")
    labels = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)), jnp.float32)
    out, _ = inference.render_chunk(renderer, {"g": params, "face": None, "background": plate}, labels,
                                    jnp.zeros((3, 4)), jnp.zeros(3, bool), inference.initial_carry(32, 32))
    np.testing.assert_allclose(out, jnp.broadcast_to(plate, out.shape), atol=1e-5)
    # "input" feeds the plate without compositing: the output is G's own (3 channels).
    config.model.background = "input"
    assert factory.build_generator(config).output_nc == 3 and factory.generator_channels(config) == 9


def test_the_plate_as_the_generator_sees_it_converts_back_exactly():
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(background.from_unit(background.to_unit(every_value)), every_value)


def test_training_with_a_plate_and_augmentation_renders_as_the_reloaded_model(tmp_path):
    """A model trained with the plate (and moved pairs) reloads with the same plate and renders alike."""
    config = staged_config("global")
    config.model.background = "composite"
    config.train.augment.scale, config.train.augment.flip = 0.1, 0.5
    config.train.prev_noise = 0.05
    workdir = str(tmp_path / "run")
    summary = train.train_and_evaluate(config, workdir, one_device_mesh())
    trainer, state = summary["trainer"], summary["state"]
    split = dataset.open_split(summary["dataset"], "train")
    plate = background.plate_from_split(split, 32, 32)
    model = checkpoints.with_plate(checkpoints.load_trained_model(config, workdir), summary["dataset"])
    np.testing.assert_allclose(model.params["background"], background.to_unit(plate))
    np.testing.assert_array_equal(background.from_unit(model.params["background"]), plate)
    assert model.renderer.background == "composite"
    renderer, params = trainer.renderer(state, background.to_unit(plate))
    labels = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    args = (labels, jnp.zeros((2, 4)), jnp.zeros(2, bool), inference.initial_carry(32, 32))
    trained, _ = inference.render_chunk(renderer, params, *args)
    reloaded, _ = inference.render_chunk(model.renderer, model.params, *args)
    np.testing.assert_allclose(trained, reloaded, atol=1e-5)
    # Another plate changes the frames: the plate reaches the output.
    other, _ = inference.render_chunk(model.renderer, dict(model.params, background=-model.params["background"]),
                                      *args)
    assert np.abs(np.asarray(other) - np.asarray(reloaded)).mean() > 1e-3
