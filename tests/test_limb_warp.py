"""limb_warp: an image of a person moved bone by bone from its pose into another."""

import numpy as np
import pytest
from helpers import scripted_person

from edn_jax.data import limb_warp
from edn_jax.pose import layout, render

H, W = 96, 64


def _pose(frame):
    return scripted_person(0, 40, H, W)[frame]


def _body_pixels(figure):
    return figure.max(axis=-1) > 0


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_the_same_pose_moves_nothing_and_no_shared_bone_is_the_identity():
    pose = _pose(3)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    map_x, map_y, person = limb_warp.backward_map(pose, pose, H, W)
    np.testing.assert_allclose(map_x, xs, atol=1e-3)
    np.testing.assert_allclose(map_y, ys, atol=1e-3)
    body_only = pose.copy()
    body_only[layout.BODY.stop:, 2] = 0  # the face and hands have no bones of their own
    assert person[_body_pixels(render.render_stick_figure(body_only, H, W))].min() > 0.9 and person.min() < 0.01
    map_x, map_y, person = limb_warp.backward_map(pose, np.zeros_like(pose), H, W)
    np.testing.assert_array_equal(map_x, xs)
    np.testing.assert_array_equal(map_y, ys)
    assert not person.any()


def test_a_shifted_person_is_sampled_from_where_it_was_and_the_far_background_stays():
    src = _pose(5)
    dst = src.copy()
    dst[..., :2] += np.array([6.0, -3.0], np.float32) * (src[..., 2:] > 0)
    map_x, map_y, _ = limb_warp.backward_map(src, dst, H, W)
    on_bones = _body_pixels(render.render_stick_figure(dst, H, W))
    # On the asked pose's bones a pixel samples the image 6 px left and 3 px lower (the identity's
    # small share pulls it slightly towards itself).
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    assert np.abs(map_x - (xs - 6))[on_bones].mean() < 0.5
    assert np.abs(map_y - (ys + 3))[on_bones].mean() < 0.3
    far = np.ones((H, W), bool)  # more than 25 px outside the person's box
    x0, y0 = np.min(dst[dst[:, 2] > 0, :2], axis=0) - 25
    x1, y1 = np.max(dst[dst[:, 2] > 0, :2], axis=0) + 25
    far[max(0, int(y0)):int(y1), max(0, int(x0)):int(x1)] = False
    assert far.sum() > 100
    np.testing.assert_allclose(map_x[far], xs[far], atol=0.05)
    np.testing.assert_allclose(map_y[far], ys[far], atol=0.05)


def test_a_figure_warped_into_another_pose_covers_that_poses_figure():
    src, dst = _pose(0), _pose(25)
    src_figure, dst_figure = render.render_stick_figure(src, H, W), render.render_stick_figure(dst, H, W)
    moved = limb_warp.warp_to_pose(src_figure, src, dst)
    assert moved.shape == src_figure.shape and moved.dtype == np.uint8
    before = _iou(_body_pixels(src_figure), _body_pixels(dst_figure))
    after = _iou(_body_pixels(moved), _body_pixels(dst_figure))
    assert before < 0.5 and after > 0.5 and after > 1.5 * before, (before, after)
    # Each limb lands in its own colour: where the figures overlap, the colours differ far less than
    # the unmoved figure's do.
    def colour_error(figure):
        on = _body_pixels(dst_figure) & _body_pixels(figure)
        return np.abs(figure[on].astype(int) - dst_figure[on].astype(int)).mean()

    assert colour_error(moved) < 0.6 * colour_error(src_figure), (colour_error(moved), colour_error(src_figure))


def test_warped_moves_every_channel_alike_and_none_leaves_the_exemplar_as_it_is():
    src, dst = _pose(2), _pose(30)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 6), dtype=np.uint8)
    both = limb_warp.warped(image, src, dst, "limbs")
    np.testing.assert_array_equal(both[..., :3], limb_warp.warp_to_pose(image[..., :3], src, dst))
    np.testing.assert_array_equal(both[..., 3:], limb_warp.warp_to_pose(image[..., 3:], src, dst))
    assert limb_warp.warped(image, src, dst, "none") is image
    with pytest.raises(ValueError, match="fill"):
        limb_warp.warped(image, src, dst, "limbs", fill=image[:-1])
    with pytest.raises(ValueError, match="unknown exemplar warp"):
        limb_warp.warped(image, src, dst, "mesh")
    assert len(limb_warp.BONES) == len(layout.BODY_LIMBS)


def test_with_a_fill_the_person_where_it_stood_gives_way_to_it():
    """An image of a person on the left, asked for on the right: with the plate as fill, the left
    shows the plate (no second person) and the right the person; without, the left keeps it."""
    src = _pose(4)
    src[..., 0] = np.where(src[..., 2] > 0, src[..., 0] - 14, 0)
    dst = src.copy()
    dst[..., 0] = np.where(src[..., 2] > 0, src[..., 0] + 28, 0)
    plate = np.full((H, W, 3), 90, np.uint8)
    image = np.where(_body_pixels(render.render_stick_figure(src, H, W))[..., None], 255, plate).astype(np.uint8)
    where_it_stood = _body_pixels(render.render_stick_figure(src, H, W)) & ~_body_pixels(
        render.render_stick_figure(dst, H, W))
    asked = _body_pixels(render.render_stick_figure(dst, H, W))
    kept = limb_warp.warp_to_pose(image, src, dst)
    filled = limb_warp.warp_to_pose(image, src, dst, fill=plate)
    assert kept[where_it_stood].mean() > 200  # the person stays where it stood
    assert np.abs(filled[where_it_stood].astype(int) - 90).mean() < 10  # the plate there instead
    assert filled[asked].mean() > 200 and kept[asked].mean() > 200  # and the person where it was asked for
    assert filled.dtype == np.uint8
