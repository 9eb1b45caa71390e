"""The exemplar (model.exemplar): candidates chosen by pose outside a window of time, moved with
their training pair, required by and reaching the generator, and the nearest training frame at
evaluation and transfer."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (SYNTHETIC_TARGET_SIZE as SIZE, one_device_mesh, reference_render, renderer_with,
                      scripted_person, scripted_records, synthetic_target_config, to_unit, transfer_config)

from edn_jax import main
from edn_jax.conditioning import background, exemplar
from edn_jax.data import augment, dataset, input_pipeline, limb_warp
from edn_jax.errors import EdnError
from edn_jax.evaluation import held_out, holdout
from edn_jax.models import factory, inference
from edn_jax.pose import layout, render
from edn_jax.runtime import images, video
from edn_jax.training import train
from edn_jax.transfer import sources
from edn_jax.transfer.target import load_target

H, W = 48, 40


def _brute_force_distance(a, b):
    body = slice(layout.BODY.start, layout.BODY.stop)
    both = (a[body, 2] > 0.05) & (b[body, 2] > 0.05)
    return np.linalg.norm(a[body, :2][both] - b[body, :2][both], axis=-1).mean()


def test_training_candidates_are_the_nearest_poses_outside_the_window_of_time():
    poses = np.concatenate([scripted_person(0, 30, H, W), scripted_person(1, 10, H, W)])
    videos = np.repeat([0, 1], [30, 10])
    frames = np.concatenate([np.arange(30), np.arange(10)])
    table = exemplar.training_candidates(poses, videos, frames, exclude=3, count=4)
    assert table.shape == (40, 4) and table.dtype == np.int32
    for i in range(40):
        allowed = [j for j in range(40) if videos[j] != videos[i] or abs(frames[j] - frames[i]) > 3]
        distance = {j: _brute_force_distance(poses[i], poses[j]) for j in allowed}
        expected = sorted(allowed, key=lambda j: distance[j])[:4]
        np.testing.assert_allclose([distance[j] for j in table[i]], [distance[j] for j in expected], atol=1e-4)
        assert all(videos[j] != videos[i] or abs(frames[j] - frames[i]) > 3 for j in table[i])
    # Without a usable pose, the records nearest in time outside the window; alone, the record itself.
    blank = np.zeros_like(poses[:8])
    np.testing.assert_array_equal(exemplar.training_candidates(blank, np.zeros(8), np.arange(8), 2, 2)[0], [3, 4])
    np.testing.assert_array_equal(exemplar.training_candidates(poses[:1], [0], [0], 2, 3), [[0, 0, 0]])


def _source(frames=6):
    return scripted_records(frames, H, W)


def _batches(source, count, **kw):
    options = input_pipeline.PipelineOptions(global_batch_size=2, height=H, width=W, seed=3, **kw)
    with input_pipeline.host_batches(source, options, process_index=0, process_count=1) as it:
        return [next(it)[1] for _ in range(count)]


def test_each_training_frame_gets_one_of_its_candidates_moved_as_its_pair_was():
    source = _source()
    aug = augment.Augment(scale=0.15, rotate=10, shift=0.1, flip=0.5)
    # Each record its own only candidate: the exemplar is the frame and figure themselves, moved alike.
    for batch in _batches(source, 3, augment=aug, exemplars=np.arange(6)[:, None]):
        for suffix in ("_prev", ""):
            found = getattr(batch, "exemplar" + suffix)
            np.testing.assert_array_equal(found[..., :3], getattr(batch, "image" + suffix))
            np.testing.assert_array_equal(found[..., 3:], getattr(batch, "label" + suffix))
    # Candidates 5 - i and 0: each frame's exemplar is one of them, as stored, and both are drawn.
    table = np.stack([5 - np.arange(6), np.zeros(6, int)], axis=1)
    fitted = holdout.records_at(types.SimpleNamespace(source=source), range(6), H, W)
    seen = set()
    for batch in _batches(source, 8, exemplars=table):
        for row in range(2):
            for t, suffix in enumerate(("_prev", "")):
                record = int(batch.frame_index[row, t])
                match = [j for j in table[record]
                         if np.array_equal(getattr(batch, "exemplar" + suffix)[row, ..., :3], fitted["frame"][j])
                         and np.array_equal(getattr(batch, "exemplar" + suffix)[row, ..., 3:], fitted["label"][j])]
                assert match, (record, suffix)
                seen.add(match[0] == 0)
    assert seen == {True, False}
    again = _batches(source, 8, exemplars=table)  # a pure function of (seed, step, row)
    np.testing.assert_array_equal(again[-1].exemplar, _batches(source, 8, exemplars=table)[-1].exemplar)
    with pytest.raises(EdnError, match="exemplar table"):
        _batches(source, 1, exemplars=np.full((6, 1), 6))


def test_with_the_limb_warp_each_exemplar_is_moved_into_its_frames_pose():
    source = _source()
    table = (5 - np.arange(6))[:, None]
    fitted = holdout.records_at(types.SimpleNamespace(source=source), range(6), H, W)
    u8 = {k: np.asarray(images.to_uint8(fitted[k])) for k in ("frame", "label")}
    plain = _batches(source, 3, exemplars=table)
    plate = np.random.default_rng(5).integers(0, 255, (H, W, 3), dtype=np.uint8)
    # With a plate, the exemplar fades to it (and to no figure) away from the frame's pose.
    for fill in (None, np.concatenate([plate, np.zeros_like(plate)], -1)):
        warped = _batches(source, 3, exemplars=table, exemplar_warp="limbs", background=None if fill is None else plate)
        for batch, unwarped in zip(warped, plain):
            for row in range(2):
                for t, suffix in enumerate(("_prev", "")):
                    j = int(table[int(batch.frame_index[row, t]), 0])
                    channels = np.concatenate([u8["frame"][j], u8["label"][j]], -1)
                    found = getattr(batch, "exemplar" + suffix)[row]
                    expected = limb_warp.warped(channels, fitted["keypoints"][j],
                                                getattr(batch, "keypoints" + suffix)[row], "limbs", fill)
                    np.testing.assert_allclose(found, to_unit(expected), atol=1e-6)
                    assert np.abs(found - getattr(unwarped, "exemplar" + suffix)[row]).mean() > 0.01


class _Fixed:
    """A generator whose output is fixed, to check what ``generate`` makes of its channels."""

    def __init__(self, out):
        self.out = out

    def apply(self, variables, g_in):
        return self.out


def test_the_copy_mask_takes_the_exemplars_colours_where_it_is_on():
    colours, copied, plate = (jnp.full((1, 4, 4, 3), v) for v in (0.5, -0.25, 0.75))
    on, off, half = (jnp.full((1, 4, 4, 1), v) for v in (1.0, -1.0, 0.0))
    out = lambda *masks: _Fixed(jnp.concatenate([colours, *masks], axis=-1))  # noqa: E731
    np.testing.assert_allclose(inference.generate(out(on), None, None, copy_from=copied), copied)
    np.testing.assert_allclose(inference.generate(out(off), None, None, copy_from=copied), colours)
    np.testing.assert_allclose(inference.generate(out(half), None, None, copy_from=copied), 0.5 * (colours + copied))
    # With the plate: the person mask (4th channel) chooses the plate, then the copy mask the exemplar.
    np.testing.assert_allclose(inference.generate(out(on, on), None, None, plate, "composite", copied), copied)
    np.testing.assert_allclose(inference.generate(out(off, on), None, None, plate, "composite", copied), plate)
    np.testing.assert_allclose(inference.generate(out(on, off), None, None, plate, "composite", copied), colours)
    assert inference.copy_source(jnp.zeros((1, 4, 4, 6)), "input") is None
    assert inference.copy_source(jnp.zeros((1, 4, 4, 6)), "copy").shape == (1, 4, 4, 3)


def _exemplar_generator():
    config = synthetic_target_config("global")
    config.model.exemplar = "copy"
    generator = factory.build_generator(config)
    image = jnp.zeros((1, 32, 32, 3))
    g_in = inference.generator_input(image, image, image, False, True, None, jnp.zeros((1, 32, 32, 6)))
    assert g_in.shape[-1] == factory.generator_channels(config) == 12
    params = generator.init(jax.random.PRNGKey(0), g_in)["params"]
    return inference.Renderer.from_config(config, generator), {"g": params, "face": None, "background": None}


def test_the_exemplar_reaches_the_output_and_a_model_trained_with_one_needs_it():
    renderer, params = _exemplar_generator()
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.uniform(-1, 1, (3, 32, 32, 3)), jnp.float32)
    ex_u8 = rng.integers(0, 255, (2, 3, 32, 32, 6), dtype=np.uint8)
    args = (labels, jnp.zeros((3, 4)), jnp.zeros(3, bool), inference.initial_carry(32, 32))
    out_a, _ = inference.render_chunk(renderer, params, *args, exemplars=jnp.asarray(to_unit(ex_u8[0])))
    out_b, _ = inference.render_chunk(renderer, params, *args, exemplars=jnp.asarray(to_unit(ex_u8[1])))
    assert np.abs(np.asarray(out_a) - np.asarray(out_b)).mean() > 1e-3
    with pytest.raises(ValueError, match="exemplar"):
        inference.render_chunk(renderer, params, *args)
    # The batch renderer (uint8 inputs, a video axis) renders what render_chunk renders.
    labels_u8 = np.asarray(images.to_uint8(labels))[None].repeat(2, 0)
    out, _ = inference.render_batch(renderer, params, jnp.asarray(labels_u8), jnp.zeros((2, 3, 4)),
                                    jnp.zeros((2, 3), bool),
                                    tuple(jnp.zeros((2, 1, 32, 32, 3)) for _ in range(2)), jnp.ones(2, bool),
                                    exemplars=jnp.asarray(ex_u8))
    chunk, _ = inference.render_chunk(renderer, params, jnp.asarray(to_unit(labels_u8[0])), *args[1:],
                                      exemplars=jnp.asarray(to_unit(ex_u8[1])))
    assert np.abs(np.asarray(out[1]).astype(int) - np.asarray(images.to_uint8(chunk)).astype(int)).max() <= 1


@pytest.fixture(scope="module")
def exemplar_target(tmp_path_factory):
    """(config, workdir) of a tiny global model with the plate and the exemplar, trained two steps."""
    config = synthetic_target_config("global")
    config.model.background, config.model.exemplar = "composite", "copy"
    config.train.num_steps = 2
    config.train.exemplar_exclude, config.train.exemplar_candidates = 2, 3
    workdir = str(tmp_path_factory.mktemp("exemplar_target"))
    train.train_and_evaluate(config, workdir, one_device_mesh())
    return config, workdir


def test_evaluation_renders_each_held_out_frame_from_its_nearest_training_frame(exemplar_target, monkeypatch):
    config, workdir = exemplar_target
    target = load_target(transfer_config(exemplar_target))
    split, train_split = (dataset.open_split(target.dataset_dir, s) for s in ("validation", "train"))
    seen = []
    original = inference.render_chunk

    def spy(*args, exemplars=None, **kwargs):
        seen.append(np.asarray(exemplars))
        return original(*args, exemplars=exemplars, **kwargs)

    monkeypatch.setattr(inference, "render_chunk", spy)
    renderer, params = target.model.renderer, target.model.params
    result, rows, _ = held_out.evaluate_held_out(renderer, params, target.dataset_dir, SIZE, SIZE, lpips=None,
                                                 face_side=16, chunk_frames=64)
    nearest = [r["nearest_train_record"] for r in rows]
    retrieved = holdout.records_at(train_split, nearest, SIZE, SIZE)
    np.testing.assert_array_equal(seen[0][:len(rows)], np.concatenate([retrieved["frame"], retrieved["label"]], -1))
    assert len(rows) == len(split.source) and result["generated"]["ssim"] is not None
    # With model.exemplar_warp="limbs", each retrieved frame moved into its held-out frame's pose.
    seen.clear()
    held_out.evaluate_held_out(renderer_with(renderer, exemplar_warp="limbs"), params, target.dataset_dir, SIZE,
                               SIZE, lpips=None, face_side=16, chunk_frames=64)
    held = holdout.records_at(split, holdout.held_out_order(split, 0), SIZE, SIZE)
    fill = exemplar.empty_exemplar(background.from_unit(params["background"]))  # the model's plate, as in training
    for t in range(len(rows)):
        plain = np.asarray(images.to_uint8(np.concatenate([retrieved["frame"][t], retrieved["label"][t]], -1)))
        expected = limb_warp.warped(plain, retrieved["keypoints"][t], held["keypoints"][t], "limbs", fill)
        np.testing.assert_allclose(seen[0][t], to_unit(expected), atol=1e-6)


def test_transfer_renders_from_the_training_frames_nearest_to_the_normalized_poses(exemplar_target, tmp_path,
                                                                                   monkeypatch):
    config = transfer_config(exemplar_target, synthetic_seed=3, synthetic_frames=12, chunk_frames=5)
    written, write_chunk = [], video.SegmentedVideoWriter.write_chunk
    monkeypatch.setattr(video.SegmentedVideoWriter, "write_chunk",
                        lambda self, frames: (written.extend(np.array(f) for f in frames), write_chunk(self, frames)))
    main.run(config, str(tmp_path / "out"))
    assert len(list(video.iter_frames(str(tmp_path / "out" / "synthetic_seed3.mp4")))) == 12
    target = load_target(config)
    source = sources.prepare_source(config, sources.resolve_sources(config)[0], SIZE, SIZE, target.stats)
    expected, _ = reference_render(target, source.keypoints)
    # Chunks of 5 chained by their carry, each frame from its own exemplar = one scan with them all.
    assert np.abs(np.stack(written).astype(int) - expected.astype(int)).max() <= 1
    # The bank's exemplar of each pose is its nearest training record, frame and figure.
    train_split = dataset.open_split(target.dataset_dir, "train")
    poses = dataset.split_keypoints(train_split, SIZE, SIZE)
    found = target.exemplars.lookup(source.keypoints[:4])
    for i, pose in enumerate(source.keypoints[:4]):
        j = int(np.argmin([_brute_force_distance(pose, p) for p in poses]))
        record = holdout.records_at(train_split, [j], SIZE, SIZE)
        np.testing.assert_array_equal(to_unit(found[i]), np.concatenate([record["frame"], record["label"]], -1)[0])
    # A frame without a person: the background plate and no figure.
    empty = target.exemplars.lookup(np.zeros((1, layout.NUM_KEYPOINTS, 3), np.float32))[0]
    np.testing.assert_array_equal(empty[..., :3], background.plate_from_split(
        train_split, SIZE, SIZE, target.model.renderer.model.plate_fill).image)
    assert not empty[..., 3:].any()
    np.testing.assert_array_equal(render.render_stick_figure(np.zeros((layout.NUM_KEYPOINTS, 3)), SIZE, SIZE),
                                  empty[..., 3:])
    # The target's bank takes the model's plate; one without it computes the same plate from the split
    # (filled as the model's is).
    alone = exemplar.ExemplarBank(train_split, SIZE, SIZE, plate_fill=target.model.renderer.model.plate_fill)
    np.testing.assert_array_equal(alone.lookup(np.zeros((1, layout.NUM_KEYPOINTS, 3), np.float32))[0], empty)
    with pytest.raises(ValueError, match="render size"):
        exemplar.ExemplarBank(train_split, SIZE, SIZE, plate=empty[:-1, :, :3])
    # With the limb warp, each frame's exemplar is moved into the pose it was looked up for.
    # With the plate given (a model with one, as the target's bank is made), they fade to it.
    moving = exemplar.ExemplarBank(train_split, SIZE, SIZE, warp="limbs")
    filling = exemplar.ExemplarBank(train_split, SIZE, SIZE, warp="limbs", plate=empty[..., :3])
    nearest = moving.nearest(source.keypoints[:4])
    for t, (image, filled) in enumerate(zip(moving.lookup(source.keypoints[:4]), filling.lookup(source.keypoints[:4]))):
        pose = (poses[nearest[t]], source.keypoints[t], "limbs")
        np.testing.assert_array_equal(image, limb_warp.warped(found[t], *pose))
        np.testing.assert_array_equal(filled, limb_warp.warped(found[t], *pose, empty))
