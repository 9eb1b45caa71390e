"""Augmentation: one similarity transform per pair, applied alike to frames, keypoints, face boxes and plates."""

import numpy as np
import pytest
from helpers import scripted_person, scripted_records

from edn_jax.data import augment, input_pipeline
from edn_jax.errors import EdnError
from edn_jax.pose import layout, render

H, W = 48, 40


def test_mirror_swaps_the_subjects_sides_and_is_its_own_inverse():
    m = layout.MIRROR
    np.testing.assert_array_equal(m[m], np.arange(layout.NUM_KEYPOINTS))
    b = layout.B
    assert m[b["LShoulder"]] == b["RShoulder"] and m[b["RAnkle"]] == b["LAnkle"] and m[b["Nose"]] == b["Nose"]
    assert m[layout.LEFT_HAND.start + 4] == layout.RIGHT_HAND.start + 4
    face = layout.FACE.start
    assert m[face + 0] == face + 16 and m[face + 36] == face + 45 and m[face + 30] == face + 30
    assert m[face + layout.FACE_RIGHT_PUPIL] == face + layout.FACE_LEFT_PUPIL


def _marker_image(points):
    image = np.zeros((H, W, 3), np.uint8)
    for x, y in points:
        image[int(y), int(x)] = 255
    return image


@pytest.mark.parametrize("params", [
    {"scale": 1.2, "angle": 0.0, "dx": 0.0, "dy": 0.0, "flip": False},
    {"scale": 1.0, "angle": 0.0, "dx": 0.1, "dy": -0.05, "flip": False},
    {"scale": 1.0, "angle": 90.0, "dx": 0.0, "dy": 0.0, "flip": False},
    {"scale": 0.9, "angle": 0.0, "dx": 0.0, "dy": 0.0, "flip": True},
])
def test_keypoints_move_where_the_image_moves(params):
    """A bright pixel under each keypoint lands, after warping the image, where the keypoint is warped to."""
    points = [(20, 24), (13, 30), (25, 17)]
    kps = layout.empty_pose()
    for i, (x, y) in enumerate(points):
        kps[i] = (x, y, 1.0)
    m = augment.matrix(params, H, W)
    moved_image = augment.warp_image(_marker_image(points), m)
    moved = augment.warp_keypoints(kps, m, params["flip"])
    if params["flip"]:  # the point of index i is now at MIRROR[i]
        moved = moved[layout.MIRROR]
    for i in range(len(points)):
        x, y = moved[i, :2]
        patch = moved_image[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2, 0]
        assert patch.max() > 40, (params, i, (x, y))
    assert (moved[len(points):, 2] == 0).all() and (moved[len(points):, :2] == 0).all()  # missing stay missing


def test_identity_changes_nothing_and_a_flip_mirrors_x():
    kps = scripted_person(0, 1, H, W)[0]
    same = {"scale": 1.0, "angle": 0.0, "dx": 0.0, "dy": 0.0, "flip": False}
    np.testing.assert_allclose(augment.warp_keypoints(kps, augment.matrix(same, H, W), False), kps, atol=1e-4)
    frame = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    np.testing.assert_array_equal(augment.warp_image(frame, augment.matrix(same, H, W)), frame)
    flip = dict(same, flip=True)
    m = augment.matrix(flip, H, W)
    np.testing.assert_array_equal(augment.warp_image(frame, m), frame[:, ::-1])
    flipped = augment.warp_keypoints(kps, m, True)
    present = kps[:, 2] > 0
    np.testing.assert_allclose(flipped[layout.MIRROR][present, 0], W - 1 - kps[present, 0], atol=1e-4)
    box, valid = augment.warp_box(np.array([2, 5, 12, 15], np.float32), True, m, H, W)
    assert valid
    np.testing.assert_allclose(box, [W - 12, 5, W - 2, 15], atol=1e-4)
    # A box whose centre leaves the frame is no longer a face.
    out = augment.matrix(dict(same, dx=0.45), H, W)
    assert augment.warp_box(np.array([30, 5, 38, 15], np.float32), True, out, H, W)[1] is False


@pytest.mark.parametrize("field,value", [("scale", 1.0), ("rotate", -1), ("shift", 0.6), ("flip", 1.5)])
def test_out_of_range_augmentation_is_refused(field, value):
    from configs import default

    section = default.get_config().train.augment
    section[field] = value
    with pytest.raises(EdnError, match=f"train.augment.{field}"):
        augment.Augment.from_config(section)


def _source(frames=6):
    return scripted_records(frames, H, W)


def _batches(source, start, count, **kw):
    options = input_pipeline.PipelineOptions(global_batch_size=2, height=H, width=W, seed=3, **kw)
    with input_pipeline.host_batches(source, options, start_step=start, process_index=0, process_count=1) as it:
        return [next(it)[1] for _ in range(count)]


def test_augmented_pairs_share_one_transform_redraw_their_figures_and_resume_alike():
    source = _source()
    plate = np.random.default_rng(2).integers(0, 255, (H, W, 3), dtype=np.uint8)
    aug = augment.Augment(scale=0.15, rotate=10, shift=0.1, flip=0.5)
    plain = _batches(source, 0, 3)
    moved = _batches(source, 0, 3, augment=aug, background=plate)
    again = _batches(source, 1, 2, augment=aug, background=plate)  # resumed at step 1: the same draws
    for a, b in zip(moved[1:], again):
        for key, value in a.as_dict().items():
            np.testing.assert_array_equal(value, getattr(b, key))
    assert not np.allclose(moved[0].image, plain[0].image)
    for batch, reference in zip(moved, plain):
        np.testing.assert_array_equal(batch.frame_index, reference.frame_index)
        for row in range(2):
            # Recover the row's transform from its plate, and check both frames and both figures used it.
            draws = [p for p in _candidate_draws(aug, batch, row)]
            assert draws, "no draw of the schedule reproduces the row's plate"
            m, flip = draws[0]
            for suffix in ("_prev", ""):
                frame = (getattr(reference, "image" + suffix)[row] + 1) * 127.5
                expected = augment.warp_image(np.round(frame).astype(np.uint8), m)
                np.testing.assert_allclose((getattr(batch, "image" + suffix)[row] + 1) * 127.5, expected, atol=1.01)
                kps = augment.warp_keypoints(getattr(reference, "keypoints" + suffix)[row], m, flip)
                np.testing.assert_allclose(getattr(batch, "keypoints" + suffix)[row], kps, atol=1e-4)
                figure = render.render_stick_figure(kps, H, W)
                np.testing.assert_allclose((getattr(batch, "label" + suffix)[row] + 1) * 127.5, figure, atol=1.01)


def _candidate_draws(aug, batch, row):
    """The (matrix, flip) of the pipeline's draw for ``row`` of this batch (found through its step)."""
    plate_u8 = np.round((batch.background[row] + 1) * 127.5)
    for step in range(3):
        params = aug.sample(np.random.default_rng([3, step, row, 1]))
        m = augment.matrix(params, H, W)
        candidate = augment.warp_image(np.random.default_rng(2).integers(0, 255, (H, W, 3), dtype=np.uint8), m)
        if np.abs(candidate.astype(np.float32) - plate_u8).max() <= 1:
            yield m, params["flip"]
