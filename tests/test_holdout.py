"""What an evaluation reads: held-out records in video order, training poses read without decoding an
image, and the two baselines (mean training frame, nearest training frame by pose)."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import scripted_person, tiny_config
from edn_jax.data import build, dataset
from edn_jax.evaluation import holdout
from edn_jax.pose import layout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 20-frame synthetic dataset stored at 32x32 (16 training frames, 4 held out)."""
    builder = build.make_builder(tiny_config(), str(tmp_path_factory.mktemp("holdout")), size=(32, 32))
    builder.download_and_prepare()
    return str(builder.data_dir)


@pytest.mark.parametrize("size", [(32, 32), (48, 96)])
def test_training_poses_are_the_records_keypoints_at_the_evaluated_size(built, size):
    train = dataset.open_split(built, "train")
    poses = dataset.split_keypoints(train, *size)
    assert poses.shape == (len(train.source), layout.NUM_KEYPOINTS, 3)
    expected = holdout.records_at(train, range(len(train.source)), *size)["keypoints"]
    np.testing.assert_allclose(poses, expected, atol=1e-4)


def test_held_out_order_and_the_mean_frame(built):
    val, train = dataset.open_split(built, "validation"), dataset.open_split(built, "train")
    order = holdout.held_out_order(val, 0)
    assert [int(val.frame_indices[i]) for i in order] == [16, 17, 18, 19]
    assert len(holdout.held_out_order(val, 3)) == 3
    mean = holdout.mean_train_frame(train, 32, 32)
    frames = holdout.records_at(train, range(len(train.source)), 32, 32)["frame"]
    np.testing.assert_allclose(mean[0], frames.mean(0), atol=1e-5)  # 16 frames: all of them are sampled


def test_nearest_poses_retrieves_the_closest_whole_pose():
    candidates = scripted_person(3, 100, 128, 128)[::10]  # a third of a second apart: distinct poses
    query = candidates[[7, 2]].copy()
    query[..., :2] += np.where(query[..., 2:] > 0, 1.5, 0.0)  # 1.5 px off the training poses 7 and 2
    np.testing.assert_array_equal(holdout.nearest_poses(jnp.asarray(query), jnp.asarray(candidates)), [7, 2])
    # A training pose that matches exactly but shows fewer than 80% of the query's body points loses.
    partial = candidates.copy()
    partial[5] = query[0]
    partial[5, 5:layout.BODY.stop, 2] = 0.0
    assert int(holdout.nearest_poses(jnp.asarray(query[:1]), jnp.asarray(partial))[0]) == 7
    partial[5, 5:layout.BODY.stop, 2] = 1.0
    assert int(holdout.nearest_poses(jnp.asarray(query[:1]), jnp.asarray(partial))[0]) == 5
