"""The background plate: recovered from footage with a moving person, and composited under G's mask."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import model_section, one_device_mesh, tiny_config

from edn_jax.conditioning import background
from edn_jax.data import dataset
from edn_jax.models import checkpoints, factory, inference
from edn_jax.pose import layout
from edn_jax.training import train

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
    # The plain per-pixel median would keep a smear of the person where it lingers. A person who
    # never moves: nothing shows what is behind it. The legacy "median" fill keeps the person there;
    # "inpaint" fills those pixels from the scene around them, and says which they are.
    still, still_poses = np.repeat(frames[:1], 12, axis=0), np.repeat(poses[:1], 12, axis=0)
    np.testing.assert_array_equal(background.plate(still, still_poses, "median"), frames[0])
    filled = background.plate_with_mask(still, still_poses)
    cover = background.figure_cover(poses[:1], H, W)[0]  # the figure grown by PLATE_COVER of its height
    assert cover[8:32, 4:12].all() and cover.mean() < 0.2
    np.testing.assert_array_equal(filled.filled, cover)
    np.testing.assert_array_equal(filled.image[~cover], scene[~cover])
    red = (filled.image[..., 0] > 200) & (filled.image[..., 1] < 60)
    assert not red[8:32, 4:12].any()  # no pixel of the person is left


def _plate_body_points(frames, poses, fill):
    from edn_jax.pose import detector

    with detector.MediaPipeHolisticDetector() as det:
        found = detector.detect_upscaled(det, background.plate(frames, poses, fill), 512)
    return int((found[layout.BODY, 2] > 0.05).sum())


def test_a_target_dancing_in_place_leaves_no_body_in_the_plate():
    """The real detector on the plate of targets who never leave their place: the synthetic subject
    and the man in single_person_cam01 (80 training frames). The median plate shows a body; the
    inpainted plate shows none."""
    from helpers import real_video

    from edn_jax import synthetic
    from edn_jax.runtime import video
    from edn_jax.pose import detector, render

    size = (96, 96)
    kps = synthetic.synthetic_keypoints(0, 240, 256, 256, 30.0)
    tf = render.fit_transform((256, 256), size)
    frames = np.stack([render.transform_image(synthetic.render_synthetic_frame(k, 256, 256), tf) for k in kps])
    poses = render.transform_keypoints(kps, tf)
    assert _plate_body_points(frames, poses, "median") >= 10
    assert _plate_body_points(frames, poses, "inpaint") == 0

    path = real_video("single_person_cam01.mp4")
    info = video.probe_video(path)
    tf = render.fit_transform((info.height, info.width), (192, 112))
    frames = np.stack([render.transform_image(f, tf) for f in video.iter_frames(path, 80)])
    with detector.MediaPipeHolisticDetector() as det:
        poses = np.stack([detector.detect_upscaled(det, f, 256) for f in frames])
    assert (poses[:, layout.BODY, 2] > 0.05).any(axis=1).mean() > 0.9
    assert _plate_body_points(frames, poses, "median") >= 10
    assert _plate_body_points(frames, poses, "inpaint") == 0


def test_the_plate_reports_how_much_of_it_was_filled():
    scene, frames, poses = _walker()
    assert "0% of the frame" in background.plate_with_mask(frames, poses).report()
    still = background.plate_with_mask(np.repeat(frames[:1], 12, axis=0), np.repeat(poses[:1], 12, axis=0))
    assert 0 < still.filled_fraction < 0.5 and not still.report().startswith("warning")
    big = layout.empty_pose()
    big[:4] = [(2, 2, 1), (W - 3, 2, 1), (2, H - 3, 1), (W - 3, H - 3, 1)]
    covered = background.plate_with_mask(frames, np.repeat(big[None], 12, axis=0))
    assert covered.filled_fraction > 0.5 and covered.report().startswith("warning")


def _figure(height, width, top, bottom, x):
    """A stick figure in [-1, 1]: one vertical line from row ``top`` to ``bottom`` at column ``x``."""
    label = -np.ones((1, height, width, 3), np.float32)
    label[0, top:bottom + 1, x] = 1.0
    return jnp.asarray(label)


def test_the_pose_region_is_the_figure_grown_by_a_fraction_of_its_height():
    label = _figure(80, 64, 20, 59, 20)  # 40 rows high
    region = np.asarray(background.pose_region(label, 0.25))[0, ..., 0]  # on within 10 px, 0 beyond 15
    assert region[40, 20] == 1 and region[40, 30] == 1 and region[40, 10] == 1 and region[10, 20] == 1
    assert 0 < region[40, 33] < 1
    assert region[40, 36] == 0 and region[40, 60] == 0 and region[2, 20] == 0 and region[76, 20] == 0
    empty = -jnp.ones((1, 64, 64, 3))
    assert not np.asarray(background.pose_region(empty, 0.25)).any()  # no figure: nowhere
    # Frames larger than the grid measure on coarser cells: the same region to within a cell.
    big = np.asarray(background.pose_region(_figure(512, 512, 80, 399, 160), 0.25))[0, ..., 0]
    assert big[240, 160 + 78] == 1 and big[240, 160 + 122] == 0


def test_the_gated_composite_is_the_plate_away_from_the_pose():
    """model.composite_region: with G's mask fully on everywhere, the frame is G's colours near the
    figure and exactly the plate away from it (and everywhere for an empty figure)."""
    config = tiny_config("global", steps=2)
    config.model.background, config.model.composite_region = "composite", 0.1
    generator = factory.build_generator(config)
    label = _figure(32, 32, 4, 27, 8)
    plate = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)
    g_in = inference.generator_input(label, label, label, False, True, plate)
    params = generator.init(jax.random.PRNGKey(0), g_in)["params"]
    head = {"kernel": params["head"]["kernel"].at[..., 3].set(0), "bias": params["head"]["bias"].at[3].set(30.0)}
    params = dict(params, head=head)
    gated = inference.generate(generator, params, g_in, plate, "composite", region=0.1)
    ungated = inference.generate(generator, params, g_in, plate, "composite")
    colours = generator.apply({"params": params}, g_in)[..., :3]
    region = np.asarray(background.pose_region(label, 0.1))[0, ..., 0]
    far, near = region == 0, region == 1
    assert far.mean() > 0.5 and near[10:20, 8].all()
    np.testing.assert_array_equal(np.asarray(gated)[0][far], np.asarray(plate)[0][far])
    np.testing.assert_allclose(np.asarray(gated)[0][near], np.asarray(colours)[0][near], atol=1e-5)
    np.testing.assert_allclose(ungated, colours, atol=1e-5)  # ungated: G's colours everywhere
    # The renderer gates the same way; an empty figure renders as the plate.
    renderer = inference.Renderer(generator, model_section(background="composite", composite_region=0.1))
    labels = jnp.concatenate([label, -jnp.ones_like(label)])
    out, _ = inference.render_chunk(renderer, {"g": params, "face": None, "background": plate}, labels,
                                    jnp.zeros((2, 4)), jnp.zeros(2, bool), inference.initial_carry(32, 32))
    np.testing.assert_array_equal(np.asarray(out)[0][far], np.asarray(plate)[0][far])
    np.testing.assert_array_equal(out[1], plate[0])


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
    config = tiny_config("global", steps=2)
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
    renderer = inference.Renderer(generator, model_section(background="composite"))
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
    config = tiny_config("global", steps=2)
    config.model.background = "composite"
    config.train.augment.scale, config.train.augment.flip = 0.1, 0.5
    config.train.prev_noise = 0.05
    workdir = str(tmp_path / "run")
    summary = train.train_and_evaluate(config, workdir, one_device_mesh())
    trainer, state = summary["trainer"], summary["state"]
    split = dataset.open_split(summary["dataset"], "train")
    plate = background.plate_from_split(split, 32, 32).image
    model = checkpoints.with_plate(checkpoints.load_trained_model(config, workdir), summary["dataset"])
    np.testing.assert_allclose(model.params["background"], background.to_unit(plate))
    np.testing.assert_array_equal(background.from_unit(model.params["background"]), plate)
    assert model.renderer.model.background == "composite"
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
