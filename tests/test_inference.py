"""Sequential rendering: the compiled scan against a per-frame loop (with and without the face
residual), and batched chunked rendering of several videos through one compilation."""


import jax
import jax.numpy as jnp
import numpy as np

from helpers import (SYNTHETIC_TARGET_SIZE as SIZE, face_batch, face_trainer, reference_render, renderer_with,
                      tiny_config, to_unit, transfer_config)
from edn_jax import synthetic
from edn_jax.conditioning import face_crop
from edn_jax.models import inference
from edn_jax.pose import render
from edn_jax.runtime import sharding
from edn_jax.transfer import sources
from edn_jax.transfer.target import load_target

SIDE = 16  # face crop at 32x32 (the minimum of face_crop_size)


def test_render_chunk_with_face_equals_a_per_frame_loop():
    SIZE = 32  # noqa: N806  (the staged config's frame size)
    config = tiny_config("global,face", steps=2)
    mesh = sharding.make_mesh(jax.devices()[:1])
    trainer, state, _ = face_trainer(config, mesh, perturb_head=True)
    renderer, params = trainer.renderer(state)
    assert renderer.has_face and renderer.face_crop == SIDE
    b = face_batch(batch=5, seed=2)
    labels, boxes, valid = jnp.asarray(b.label), jnp.asarray(b.face_box), jnp.asarray(b.face_valid)
    scanned, carry = inference.render_chunk(renderer, params, labels, boxes, valid, inference.initial_carry(SIZE, SIZE))
    plain, _ = inference.render_chunk(renderer, params, labels, boxes, valid, inference.initial_carry(SIZE, SIZE),
                                      apply_face=False)

    raw_carry, _ = inference.render_chunk(renderer_with(renderer, face_prev="raw"), params, labels,
                                          boxes, valid, inference.initial_carry(SIZE, SIZE))

    # The loop by hand: frame t is G's output on the refined frame t-1 (the original's inference);
    # without the face model the carry is G's own output.
    prev = plain_prev = raw_prev = jnp.zeros((1, SIZE, SIZE, 3))
    side = SIDE
    for t in range(5):
        g = lambda prev: trainer.generator.apply({"params": params["g"]},  # noqa: E731
                                                 inference.generator_input(labels[t:t + 1], prev, prev, False))
        corner = face_crop.crop_boxes(boxes[t:t + 1], valid[t:t + 1], SIZE, SIZE, side)[0]
        y, x = int(corner[0]), int(corner[1])

        def refined(out):
            expected = np.array(out[0])
            if bool(valid[t]):
                face = trainer.face_generator.apply({"params": params["face"]},
                                                    labels[t:t + 1, y:y + side, x:x + side],
                                                    out[:, y:y + side, x:x + side])
                expected[y:y + side, x:x + side] = np.asarray(face[0])
            return expected

        expected = refined(g(prev))
        np.testing.assert_allclose(np.asarray(scanned[t]), expected, atol=2e-5)
        plain_out = g(plain_prev)
        np.testing.assert_allclose(np.asarray(plain[t]), np.asarray(plain_out[0]), atol=2e-5)
        raw_out = g(raw_prev)
        np.testing.assert_allclose(np.asarray(raw_carry[t]), refined(raw_out), atol=2e-5)
        prev, plain_prev, raw_prev = jnp.asarray(expected)[None], plain_out, raw_out
    np.testing.assert_allclose(np.asarray(carry[0]), np.asarray(prev), atol=2e-5)
    # From the first frame with a face on, conditioning on the refined frame changes what follows.
    first = int(np.flatnonzero(np.asarray(valid))[0])
    assert float(jnp.abs(scanned[first + 1] - raw_carry[first + 1]).max()) > 1e-3


def test_scan_matches_a_per_frame_python_loop(synthetic_target):
    config = transfer_config(synthetic_target, synthetic_frames=7)
    target = load_target(config)
    renderer, params = target.model.renderer, target.model.params
    assert renderer.has_face
    source = sources.prepare_source(config, sources.resolve_sources(config)[0], SIZE, SIZE, target.stats)
    labels = to_unit(render.render_stick_figures(source.keypoints, SIZE, SIZE))
    boxes, valid = render.face_boxes(source.keypoints, SIZE, SIZE)
    assert valid.all()

    scanned, carry = inference.render_chunk(renderer, params, jnp.asarray(labels), jnp.asarray(boxes),
                                            jnp.asarray(valid), inference.initial_carry(SIZE, SIZE))
    prev = prev_label = jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
    looped = []
    for t in range(len(labels)):  # one frame at a time, no scan and no jit
        label = jnp.asarray(labels[t:t + 1])
        out = renderer.generator.apply({"params": params["g"]},
                                       inference.generator_input(label, prev, prev_label, renderer.model.use_prev_label))
        looped.append(inference.refine_faces(renderer, params["face"], out, label, boxes[t:t + 1], valid[t:t + 1])[0])
        prev, prev_label = looped[-1][None], label  # the next frame comes from the face-refined one
    np.testing.assert_allclose(np.asarray(scanned), np.stack(looped), atol=1e-4)
    np.testing.assert_allclose(np.asarray(carry[0]), np.asarray(prev), atol=1e-4)
    # The face residual is applied: without it the face crops differ.
    plain, _ = inference.render_chunk(renderer, params, jnp.asarray(labels), jnp.asarray(boxes), jnp.asarray(valid),
                                      inference.initial_carry(SIZE, SIZE), apply_face=False)
    assert np.abs(np.asarray(plain) - np.asarray(scanned)).max() > 1e-3
    # Each frame depends on the previous output: frame 1 rendered from a blank previous frame differs.
    alone, _ = inference.render_chunk(renderer, params, jnp.asarray(labels[1:2]), jnp.asarray(boxes[1:2]),
                                      jnp.asarray(valid[1:2]), inference.initial_carry(SIZE, SIZE))
    assert np.abs(np.asarray(alone[0]) - np.asarray(scanned[1])).max() > 1e-3


def test_batched_chunks_match_whole_sequence_renders(synthetic_target, monkeypatch):
    """Two slots, chunks of 4 with padded tails, a third video taking over a slot: each video's
    frames equal one render_chunk call over the whole sequence, from one compilation."""
    config = transfer_config(synthetic_target)
    target = load_target(config)
    traces, render_chunk = [], inference.render_chunk

    def counted(*args, **kwargs):  # runs only while render_batch is traced
        traces.append(1)
        return render_chunk(*args, **kwargs)

    monkeypatch.setattr(inference, "render_chunk", counted)
    lengths = {"a": 9, "b": 5, "c": 6}
    kps = {name: synthetic.synthetic_keypoints(seed, n, SIZE, SIZE) for seed, (name, n) in
           enumerate(lengths.items(), 2)}
    batch = inference.BatchRenderer(target.model, slots=2, chunk=4)
    assert len(batch.mesh.devices.flat) == 2  # the two videos are sharded over two devices
    queue, slots, got = list(kps), [None, None], {k: [] for k in kps}
    pos = {}
    while queue or any(slots):
        reset = np.zeros(2, bool)
        for i in range(2):
            if slots[i] is None and queue:
                slots[i], pos[queue[0]], reset[i] = queue[0], 0, True
                queue.pop(0)
        labels = np.zeros((2, 4, SIZE, SIZE, 3), np.uint8)
        boxes, valid, used = np.zeros((2, 4, 4), np.float32), np.zeros((2, 4), bool), [0, 0]
        for i, name in enumerate(slots):
            if name is None:
                continue
            chunk = kps[name][pos[name]:pos[name] + 4]
            used[i] = len(chunk)
            chunk = np.concatenate([chunk, chunk[[-1] * (4 - len(chunk))]])
            labels[i] = render.render_stick_figures(chunk, SIZE, SIZE)
            boxes[i], valid[i] = render.face_boxes(chunk, SIZE, SIZE)
        out = batch(labels, boxes, valid, reset)
        for i, name in enumerate(slots):
            if name is None:
                continue
            got[name].append(out[i, :used[i]])
            pos[name] += used[i]
            if pos[name] >= lengths[name]:
                slots[i] = None
    monkeypatch.undo()
    assert len(traces) <= 1  # 4 calls, 3 videos, a slot refilled: traced (and compiled) at most once
    for name, keypoints in kps.items():
        expected, _ = reference_render(target, keypoints)
        frames = np.concatenate(got[name])
        assert frames.shape == expected.shape
        assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1  # float rounding at most
