"""Dataset building through build mode: real footage, stored order, metadata, bad input."""

import os

import numpy as np
import pytest

from helpers import real_video, scripted_person
from configs import default
from edn_jax import main, synthetic
from edn_jax.data import dataset
from edn_jax.errors import EdnError
from edn_jax.pose import layout, normalization, pipeline, render
from edn_jax.runtime import video


def _build_config(**build):
    config = default.get_config()
    config.mode = "build"
    for key, value in build.items():
        config.build[key] = value
    return config


def _records(split):
    return [split.source[i] for i in range(len(split.source))]


def test_real_video_build_80_20_with_pose_mode_keypoints(tmp_path, tracked_real):
    config = _build_config()
    config.input.video = real_video("single_person_cam01.mp4")
    config.pose.detect_threads = 1  # the frame-by-frame tracker, as tracked_real runs it: equal keypoints
    main.run(config, str(tmp_path))
    target = tmp_path / "tfds" / "edn_pose_frames" / "single_person_cam01_256x256" / "1.0.0"
    train, val = dataset.open_split(str(target), "train"), dataset.open_split(str(target), "validation")
    assert (len(train.source), len(val.source)) == (80, 20)
    train_records, val_records = _records(train), _records(val)
    assert [r["frame_index"] for r in train_records] == list(range(80))  # stored in frame order
    assert [r["frame_index"] for r in val_records] == list(range(80, 100))
    assert list(train.frame_indices) == list(range(80)) and set(train.video_ids) == {0}

    # The keypoints are pose mode's for the same frames (same detector, tracker and cleanup),
    # mapped to the 256x256 working resolution like the frames.
    raw, _ = tracked_real("single_person_cam01.mp4")
    cleaned = pipeline.clean_keypoints(raw, 60.0, default.get_config().pose)
    tf = render.fit_transform((1920, 1080), (256, 256), "pad")
    expected = render.transform_keypoints(cleaned, tf)
    stored = np.stack([r["keypoints"] for r in train_records + val_records])
    np.testing.assert_array_equal(stored, expected)

    # Frames are the video's frames letterboxed to 256x256, stored losslessly.
    frames = list(video.iter_frames(real_video("single_person_cam01.mp4"), 3))
    np.testing.assert_array_equal(train_records[2]["frame"], render.transform_image(frames[2], tf))
    assert all(r["detected"] for r in train_records + val_records)

    # Normalization statistics come from the training frames only, stored in the metadata.
    stats = normalization.stats_to_dict(normalization.pose_statistics(expected[:80]))
    assert train.metadata["normalization"] == pytest.approx(stats)
    assert train.metadata["videos"][0]["fps"] == 60.0


def test_a_build_reads_pose_modes_keypoints_instead_of_detecting_again(tmp_path):
    path = real_video("single_person_cam01.mp4")
    kps = scripted_person(3, 15, 1920, 1080)  # poses no detector would find in that video
    seq = pipeline.PoseSequence(kps, kps.copy(), 60.0, 1920, 1080, path)
    keypoints = str(tmp_path / "keypoints.npz")
    pipeline.save_keypoints(keypoints, seq)
    config = _build_config(height=64, width=64, keypoints=keypoints)
    config.input.video, config.input.max_frames = path, 12
    main.run(config, str(tmp_path / "w"))
    target = tmp_path / "w" / "tfds" / "edn_pose_frames" / "single_person_cam01_64x64" / "1.0.0"
    records = _records(dataset.open_split(str(target), "train")) + _records(dataset.open_split(str(target), "validation"))
    expected = render.transform_keypoints(kps[:12], render.fit_transform((1920, 1080), (64, 64), "pad"))
    np.testing.assert_array_equal(np.stack([r["keypoints"] for r in records]), expected)  # the file's, cut to 12

    other = _build_config(keypoints=keypoints)
    other.input.video = real_video("single_person_cam02.mp4")
    with pytest.raises(EdnError, match="holds the poses of .*single_person_cam01"):
        main.run(other, str(tmp_path / "w2"))
    two = _build_config(keypoints=f"{keypoints},{keypoints}")
    two.input.video = path
    with pytest.raises(EdnError, match="2 files for 1 videos"):
        main.run(two, str(tmp_path / "w3"))


def test_synthetic_build_via_build_mode(tmp_path):
    config = _build_config(height=64, width=64, synthetic_seeds="2")
    config.synthetic.num_frames = 10
    main.run(config, str(tmp_path))
    target = tmp_path / "tfds" / "edn_synthetic" / "seeds2_10f_64x64" / "1.0.0"
    val = dataset.open_split(str(target), "validation")
    np.testing.assert_array_equal(np.stack([r["keypoints"] for r in _records(val)]),
                                  synthetic.synthetic_keypoints(2, 10, 64, 64, 30.0)[8:])


def test_existing_dataset_is_refused_then_moved_aside(tmp_path):
    config = _build_config(height=32, width=32)
    config.synthetic.num_frames = 5
    main.run(config, str(tmp_path))
    target = tmp_path / "tfds" / "edn_synthetic" / "seeds0_5f_32x32" / "1.0.0"
    before = sorted(os.listdir(target))
    with pytest.raises(EdnError, match="already built"):
        main.run(config, str(tmp_path))
    assert sorted(os.listdir(target)) == before
    config.overwrite = True
    main.run(config, str(tmp_path))
    aside = [p for p in os.listdir(target.parent) if p.startswith("1.0.0.old-")]
    assert len(aside) == 1 and sorted(os.listdir(target.parent / aside[0])) == before
    assert len(dataset.open_split(str(target), "train").source) == 4


def test_missing_split_and_missing_dataset(tmp_path):
    config = _build_config(height=32, width=32)
    config.synthetic.num_frames = 5
    main.run(config, str(tmp_path))
    target = tmp_path / "tfds" / "edn_synthetic" / "seeds0_5f_32x32" / "1.0.0"
    with pytest.raises(EdnError, match="split 'test' does not exist.*train, validation"):
        dataset.open_split(str(target), "test")
    with pytest.raises(EdnError, match="no built dataset"):
        dataset.open_split(str(tmp_path / "nothing"), "train")


def test_unreadable_video_fails_before_building(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    config = _build_config()
    config.input.video = str(bogus)
    with pytest.raises(EdnError, match="cannot read"):
        main.run(config, str(tmp_path / "work"))
    assert not (tmp_path / "work" / "tfds").exists()


def test_video_mostly_without_a_person_is_refused(tmp_path):
    clip = synthetic.synthetic_clip(seed=0, num_frames=8, height=256, width=256)
    empty = synthetic.render_synthetic_frame(layout.empty_pose(), 256, 256)  # the stage without the subject
    path = str(tmp_path / "mostly_empty.mp4")
    video.write_video(path, list(clip.frames) + [empty] * 24, clip.fps)
    config = _build_config()
    config.input.video = path
    config.pose.max_gap = 2
    with pytest.raises(EdnError, match=r"person was found in only \d+ of 32 frames"):
        main.run(config, str(tmp_path / "work"))
    built = tmp_path / "work" / "tfds" / "edn_pose_frames"
    assert not any(f.endswith("dataset_info.json") for _, _, files in os.walk(built) for f in files)


@pytest.mark.parametrize("field,value,fragment", [("height", 255, "invalid"), ("val_fraction", 1.0, "val_fraction"),
                                                  ("image_format", "gif", "image_format"),
                                                  ("synthetic_seeds", "a,b", "synthetic_seeds")])
def test_bad_build_settings(tmp_path, field, value, fragment):
    with pytest.raises(EdnError, match=fragment):
        main.run(_build_config(**{field: value}), str(tmp_path))


def test_built_dataset_feeds_the_sharded_pipeline(tmp_path):
    """ArrayRecord source + metadata pair index -> global batches on an 8-device mesh."""
    import jax
    from jax.sharding import Mesh

    from edn_jax.data import input_pipeline, pair_schedule

    config = _build_config(height=64, width=64, synthetic_seeds="0,1")
    config.synthetic.num_frames = 20
    main.run(config, str(tmp_path))
    split = dataset.open_split(str(tmp_path / "tfds" / "edn_synthetic" / "seeds0-1_20f_64x64" / "1.0.0"), "train")
    index = pair_schedule.PairIndex.from_source(split.source, split.video_ids, split.frame_indices)
    assert len(index) == 2 * 15  # 16 training frames per video -> 15 pairs each
    mesh = Mesh(np.array(jax.devices()), ("data",))
    exact = {seed: synthetic.synthetic_keypoints(seed, 20, 64, 64, 30.0) for seed in (0, 1)}
    options = input_pipeline.PipelineOptions(global_batch_size=8, height=64, width=64, seed=0)
    with input_pipeline.make_train_iterator(split.source, options, mesh, pair_index=index) as it:
        for _ in range(2):
            step, batch = next(it)
            jax.block_until_ready(batch.label)
            assert batch.label.shape == (8, 64, 64, 3) and len(batch.label.sharding.device_set) == 8
            ids, frames = np.asarray(batch.video_id), np.asarray(batch.frame_index)
            assert (ids[:, 0] == ids[:, 1]).all() and (frames[:, 1] - frames[:, 0] == 1).all()
            for row in range(8):
                np.testing.assert_array_equal(np.asarray(batch.keypoints)[row], exact[ids[row, 1]][frames[row, 1]])
