"""Temporal-pair training batches: pairing, determinism, resume, sharding, resizing, errors."""

import gc
import threading

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from edn_jax.data import input_pipeline as ip
from edn_jax.data import pair_schedule as ps
from edn_jax.errors import EdnError
from edn_jax.pose import render
from edn_jax.synthetic import synthetic_clip

H = W = 64
DROPPED = (5, 11, 12, 13)  # frames of video 1 with nobody in them: its chain breaks twice
NO_FACE = (1, 19)  # (video_id, frame_index) of the one record without a face box
# Pairs by (video_id, frame_index of frame t-1): 23 in video 0, 4 + 4 + 5 in video 1.
EXPECTED_PAIRS = {(0, t) for t in range(23)} | {(1, t) for t in (*range(0, 4), *range(6, 10), *range(14, 19))}


def make_records(height, width):
    """Records of two synthetic videos (24 and 20 frames, some of video 1 dropped), shuffled."""
    records = []
    for video_id, num_frames, dropped in ((0, 24, ()), (1, 20, DROPPED)):
        clip = synthetic_clip(seed=video_id, num_frames=num_frames, height=height, width=width)
        for t in range(num_frames):
            if t in dropped:
                continue
            box, valid = render.face_box(clip.keypoints[t], height, width)
            if (video_id, t) == NO_FACE:
                box, valid = np.zeros(4, np.float32), False
            records.append({"frame": clip.frames[t], "keypoints": clip.keypoints[t], "frame_index": t,
                            "video_id": video_id, "face_box": box, "face_valid": valid})
    # Storage order must not matter: the pipeline pairs records by their fields.
    order = np.random.default_rng(0).permutation(len(records))
    return [records[i] for i in order]


@pytest.fixture(scope="module")
def source():
    return make_records(H, W)


@pytest.fixture(scope="module")
def by_frame(source):
    return {(r["video_id"], r["frame_index"]): r for r in source}


CALL_ARGS = ("start_step", "pair_index", "process_index", "process_count")  # the rest are PipelineOptions


def host(source, **kw):
    args = {**dict(global_batch_size=8, height=H, width=W, seed=0, process_index=0, process_count=1, num_threads=2),
            **kw}
    call = {k: args.pop(k) for k in CALL_ARGS if k in args}
    return ip.host_batches(source, ip.PipelineOptions(**args), **call)


def take(iterator, n):
    with iterator:
        return [next(iterator) for _ in range(n)]


def unit(image_uint8):
    return image_uint8.astype(np.float32) / 127.5 - 1


def pair_keys(batch):
    return [(int(v), int(f)) for v, f in zip(batch.video_id[:, 0], batch.frame_index[:, 0])]


def assert_same_batches(a, b):
    assert [s for s, _ in a] == [s for s, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert x.as_dict().keys() == y.as_dict().keys()
        for k, v in x.as_dict().items():
            np.testing.assert_array_equal(v, getattr(y, k), err_msg=k)


def test_temporal_pairs_follow_the_fields_not_the_storage_order():
    #       record: 0  1  2  3  4  5
    video_ids = [1, 0, 0, 1, 0, 1]
    frames = [3, 1, 0, 2, 2, 5]  # video 1 misses frame 4, so (3, 5) is no pair
    pairs = ps.temporal_pairs(video_ids, frames)
    np.testing.assert_array_equal(pairs, [[2, 1], [1, 4], [3, 0]])
    assert ps.temporal_pairs([], []).shape == (0, 2)
    with pytest.raises(EdnError, match="both frame 2 of video 0"):
        ps.temporal_pairs([0, 0, 1], [2, 2, 2])
    with pytest.raises(EdnError, match="equal-length"):
        ps.temporal_pairs([0, 0], [1])


def test_pair_index_from_metadata_equals_index_from_records(source):
    index = ps.PairIndex.from_source(source)
    assert len(index) == len(EXPECTED_PAIRS) == 36
    got = {(source[p]["video_id"], source[p]["frame_index"]) for p, _ in index.pairs}
    assert got == EXPECTED_PAIRS
    for p, c in index.pairs:
        assert source[c]["video_id"] == source[p]["video_id"]
        assert source[c]["frame_index"] == source[p]["frame_index"] + 1
    vids = np.array([r["video_id"] for r in source])
    frames = np.array([r["frame_index"] for r in source])
    np.testing.assert_array_equal(ps.PairIndex.from_source(source, vids, frames).pairs, index.pairs)
    with pytest.raises(EdnError, match=f"describes {len(source) - 1} records but the source has {len(source)}"):
        ps.PairIndex.from_source(source, vids[:-1], frames[:-1])
    with pytest.raises(EdnError, match="only one of"):
        ps.PairIndex.from_source(source, vids)


def test_schedule_is_the_documented_permutation_without_remainder():
    schedule = ps.BatchSchedule(num_pairs=36, global_batch_size=8, seed=7)
    assert schedule.steps_per_epoch == 4
    for step in (0, 3, 4, 9):
        epoch, k = divmod(step, 4)
        want = np.random.default_rng([7, epoch]).permutation(36)[8 * k:8 * k + 8]
        np.testing.assert_array_equal(schedule.global_batch(step), want)
        np.testing.assert_array_equal(np.concatenate([schedule.local_batch(step, p, 4) for p in range(4)]), want)


def test_batch_rows_are_consecutive_frames_with_their_figures_and_frames(source, by_frame):
    seen = []
    for step, batch in take(host(source), 4):  # one epoch: 4 batches of 8 out of 36 pairs
        assert batch.image.shape == batch.label_prev.shape == (8, H, W, 3)
        assert batch.image.dtype == batch.label.dtype == np.float32
        assert batch.keypoints.shape == (8, 137, 3) and batch.face_box.shape == (8, 4)
        assert batch.face_valid.dtype == bool and batch.frame_index.dtype == np.int32
        np.testing.assert_array_equal(batch.video_id[:, 0], batch.video_id[:, 1])
        np.testing.assert_array_equal(batch.frame_index[:, 1] - batch.frame_index[:, 0], 1)
        for row, key in enumerate(pair_keys(batch)):
            for t, suffix in ((0, "_prev"), (1, "")):
                record = by_frame[(key[0], key[1] + t)]
                figure = render.render_stick_figure(record["keypoints"], H, W)
                np.testing.assert_array_equal(getattr(batch, "label" + suffix)[row], unit(figure))
                np.testing.assert_array_equal(getattr(batch, "image" + suffix)[row], unit(record["frame"]))
                np.testing.assert_array_equal(getattr(batch, "keypoints" + suffix)[row], record["keypoints"])
                np.testing.assert_array_equal(getattr(batch, "face_box" + suffix)[row], record["face_box"])
                assert getattr(batch, "face_valid" + suffix)[row] == record["face_valid"]
        assert batch.image.min() >= -1 and batch.image.max() <= 1 and batch.label.min() == -1
        seen += pair_keys(batch)
    assert len(seen) == len(set(seen)) == 32 and set(seen) <= EXPECTED_PAIRS


def test_every_pair_appears_exactly_once_per_epoch(source):
    batches = take(host(source, global_batch_size=4, height=16, width=16), 18)  # 36 / 4: two full epochs
    epochs = [[k for _, b in batches[e * 9:(e + 1) * 9] for k in pair_keys(b)] for e in (0, 1)]
    for keys in epochs:
        assert sorted(keys) == sorted(EXPECTED_PAIRS)
    assert epochs[0] != epochs[1]  # each epoch has its own order
    assert [s for s, _ in batches] == list(range(18))


def test_same_seed_gives_the_same_batches_and_another_seed_does_not(source):
    first = take(host(source, seed=3), 3)
    assert_same_batches(first, take(host(source, seed=3, num_threads=1, prefetch=1), 3))
    other = take(host(source, seed=4), 3)
    assert [pair_keys(b) for _, b in first] != [pair_keys(b) for _, b in other]


def test_resuming_reproduces_the_uninterrupted_run_across_epochs(source):
    full = take(host(source), 10)  # 4 steps per epoch: crosses two epoch boundaries
    assert_same_batches(take(host(source, start_step=3), 7), full[3:])
    with host(source) as it:
        for _ in range(6):
            next(it)
        state = it.state()
    assert state == {"step": 6}
    assert_same_batches(take(host(source, start_step=state["step"]), 4), full[6:])


def test_global_batch_is_the_concatenation_of_the_per_process_batches(source):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert mesh.shape["data"] == 8
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    shards = [take(host(source, seed=5, start_step=2, process_index=p, process_count=2), 3) for p in (0, 1)]
    with ip.make_train_iterator(source, ip.PipelineOptions(8, H, W, seed=5, num_threads=2), mesh, start_step=2) as it:
        for i in range(3):
            step, batch = next(it)
            jax.block_until_ready(batch)
            assert step == 2 + i and it.state() == {"step": 3 + i}
            assert shards[0][i][0] == shards[1][i][0] == step
            for key, array in batch.as_dict().items():
                local = (getattr(shards[0][i][1], key), getattr(shards[1][i][1], key))
                assert isinstance(array, jax.Array) and array.sharding == sharding, key
                assert array.shape == (8,) + local[0].shape[1:] and array.dtype == local[0].dtype, key
                np.testing.assert_array_equal(np.asarray(array), np.concatenate(local), err_msg=key)
            assert len(batch.image.addressable_shards) == 8
            assert batch.image.addressable_shards[0].data.shape == (1, H, W, 3)


def test_frames_stored_larger_are_fit_to_the_output_size():
    source = make_records(64, 96)
    with host(source, height=32, width=48) as it:
        _, batch = next(it)
    by_frame = {(r["video_id"], r["frame_index"]): r for r in source}
    tf = render.fit_transform((64, 96), (32, 48), "pad")
    assert tf.scale == 0.5 and (tf.offset_x, tf.offset_y) == (0, 0)
    assert batch.image.shape == batch.label.shape == (8, 32, 48, 3)
    for row, (vid, frame) in enumerate(pair_keys(batch)):
        record = by_frame[(vid, frame + 1)]
        kps = record["keypoints"]
        assert (kps[:, 2] > 0).all()
        np.testing.assert_allclose(batch.keypoints[row, :, :2], (kps[:, :2] + 0.5) * 0.5 - 0.5, atol=1e-5)
        np.testing.assert_allclose(batch.keypoints[row, :, :2], kps[:, :2] * 0.5, atol=0.25 + 1e-5)
        np.testing.assert_array_equal(batch.keypoints[row, :, 2], kps[:, 2])
        np.testing.assert_allclose(batch.face_box[row], record["face_box"] * 0.5, atol=1e-5)
        np.testing.assert_array_equal(batch.image[row], unit(render.transform_image(record["frame"], tf)))
        np.testing.assert_array_equal(batch.label[row],
                                      unit(render.render_stick_figure(batch.keypoints[row], 32, 48)))
    # Into a square the 2:3 frame is padded: black bars above and below, boxes shifted down.
    with host(source, height=48, width=48) as it:
        _, batch = next(it)
    tf = render.fit_transform((64, 96), (48, 48), "pad")
    assert tf.offset_y == 8 and tf.offset_x == 0
    assert (batch.image[:, :8] == -1).all() and (batch.image[:, -8:] == -1).all()
    valid = batch.face_valid
    box = np.stack([by_frame[(v, f + 1)]["face_box"] for v, f in pair_keys(batch)])
    np.testing.assert_allclose(batch.face_box[valid], (box * 0.5 + [0, 8, 0, 8])[valid], atol=1e-5)


def test_user_errors_name_the_problem(source):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    with pytest.raises(EdnError, match="36 temporal pairs, fewer than one global batch of 40"):
        host(source, global_batch_size=40)
    with pytest.raises(EdnError, match="global batch size 6 is not divisible by the 4 processes"):
        host(source, global_batch_size=6, process_count=4)
    with pytest.raises(EdnError, match="process index 2 is outside"):
        host(source, process_index=2, process_count=2)
    with pytest.raises(EdnError, match="global batch size 12 is not divisible by the 8 devices"):
        ip.make_train_iterator(source, ip.PipelineOptions(12, H, W, seed=0), mesh)
    with pytest.raises(EdnError, match="no axis 'batch'"):
        ip.make_train_iterator(source, ip.PipelineOptions(8, H, W, seed=0), mesh, data_axis="batch")
    with pytest.raises(EdnError, match="seed must be a non-negative integer"):
        host(source, seed=-1)


def test_errors_while_loading_reach_the_consumer(source):
    bad = [dict(r, frame=r["frame"].astype(np.float32)) for r in source]
    with host(bad) as it:
        for _ in range(2):  # and stay raised
            with pytest.raises(EdnError, match="expected uint8"):
                next(it)
    # An index built for another split would pair unrelated frames: refused when loading.
    stale = ps.PairIndex([r["video_id"] for r in source], [r["frame_index"] + 1 for r in source])
    with host(source, pair_index=stale) as it, pytest.raises(EdnError, match="but the pair index says"):
        next(it)


def producers():
    return [t for t in threading.enumerate() if t.name == "edn-host-batches"]


def test_close_and_garbage_collection_stop_the_prefetch_thread(source):
    assert not producers()
    it = host(source, height=16, width=16)
    next(it)
    assert len(producers()) == 1
    it.close()
    assert not producers()
    with pytest.raises(StopIteration):
        next(it)
    it = host(source, height=16, width=16)
    next(it)
    del it
    gc.collect()
    assert not producers()
