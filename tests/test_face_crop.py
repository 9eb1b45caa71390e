"""Fixed-size face crops: exact round trips against NumPy slicing, boxes inside the frame, jit and sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from edn_jax import stages
from edn_jax.conditioning import face_crop
from edn_jax.errors import EdnError
from edn_jax.pose import layout, render

H, W, SIZE = 40, 56, 16


def images_and_corners(batch, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-1, 1, (batch, H, W, 3)), jnp.float32)
    corners = np.stack([rng.integers(0, H - SIZE + 1, batch), rng.integers(0, W - SIZE + 1, batch)], -1)
    corners[:4] = [[0, 0], [H - SIZE, W - SIZE], [0, W - SIZE], [H - SIZE, 0]][:batch]  # every border
    return x, jnp.asarray(corners, jnp.int32)


@pytest.mark.parametrize("hw, size", [((512, 1024), 128), ((256, 512), 64), ((256, 256), 32),
                                      ((1080, 1920), 240), ((64, 64), 16), ((16, 16), 16)])
def test_face_crop_size(hw, size):
    assert stages.face_crop_size(*hw) == size


def test_face_crop_size_rejects_tiny_frames():
    with pytest.raises(EdnError, match="too small") as e:
        stages.face_crop_size(12, 64)
    assert "\n" not in str(e.value)


def test_crop_and_paste_match_numpy_and_round_trip():
    x, corners = images_and_corners(4)
    patches = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, SIZE, SIZE, 3)), jnp.float32)
    crop = jax.jit(face_crop.crop, static_argnums=2)
    paste = jax.jit(face_crop.paste)
    crops = crop(x, corners, SIZE)
    assert crops.shape == (4, SIZE, SIZE, 3)
    pasted = paste(x, patches, corners)
    want_pasted = np.array(x)
    for b, (y0, x0) in enumerate(np.asarray(corners)):
        np.testing.assert_array_equal(crops[b], np.asarray(x)[b, y0:y0 + SIZE, x0:x0 + SIZE])
        want_pasted[b, y0:y0 + SIZE, x0:x0 + SIZE] = patches[b]
    np.testing.assert_array_equal(pasted, want_pasted)  # only the crop window changes
    np.testing.assert_array_equal(paste(x, crops, corners), x)
    np.testing.assert_array_equal(crop(pasted, corners, SIZE), patches)
    # Eager gives the same, and pasting casts to the images' dtype.
    np.testing.assert_array_equal(face_crop.crop(x, corners, SIZE), crops)
    assert face_crop.paste(x, patches.astype(jnp.bfloat16), corners).dtype == jnp.float32


def test_crop_boxes_centre_on_the_face_and_stay_inside():
    size = SIZE
    # (x0, y0, x1, y1): middle of the frame, odd centre, past each border, the frame itself, invalid.
    boxes = jnp.array([[20.0, 12.0, 36.0, 28.0], [9.3, 10.6, 30.1, 21.0], [-8.0, -5.0, 6.0, 4.0],
                       [50.0, 35.0, 70.0, 52.0], [0.0, 0.0, W, H], [20.0, 12.0, 36.0, 28.0]])
    valid = jnp.array([True, True, True, True, True, False])
    corners = np.asarray(jax.jit(face_crop.crop_boxes, static_argnums=(2, 3, 4))(boxes, valid, H, W, size))
    assert corners.dtype == np.int32 and corners.shape == (6, 2)
    assert np.all(corners >= 0) and np.all(corners <= [H - size, W - size])
    np.testing.assert_array_equal(corners, [[13, 21], [8, 12], [0, 0], [H - size, W - size], [13, 21], [0, 0]])
    # Where the frame allows it, the crop's middle is within half a pixel of the box centre.
    b = np.asarray(boxes)
    centre = np.stack([(b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2], -1)
    middle = corners + (size - 1) / 2
    for i in (0, 1, 4):
        assert np.all(np.abs(middle[i] - centre[i]) <= 0.5), (i, middle[i], centre[i])
    with pytest.raises(EdnError, match="does not fit a 40x56 frame"):
        face_crop.crop_boxes(boxes, valid, H, W, 48)


def test_crop_boxes_agree_with_fixed_size_face_box():
    rng = np.random.default_rng(2)
    kps = np.zeros((3, layout.NUM_KEYPOINTS, 3), np.float32)
    for t, (cx, cy) in enumerate([(28.3, 20.2), (20.7, 17.4), (33.1, 22.9)]):
        n = kps[t, layout.FACE].shape[0]
        kps[t, layout.FACE] = np.stack([cx + rng.uniform(-4, 4, n), cy + rng.uniform(-4, 4, n), np.ones(n)], -1)
    boxes, valid = render.face_boxes(kps, H, W)
    corners = np.asarray(face_crop.crop_boxes(boxes, valid, H, W, SIZE))
    for t in range(len(kps)):
        box, ok = render.fixed_size_face_box(kps[t], H, W, SIZE)
        assert ok
        np.testing.assert_array_equal(corners[t], [box[1], box[0]])


def test_crop_and_paste_sharded_over_the_batch():
    devices = np.array(jax.devices()[:8])
    assert devices.size == 8
    mesh = Mesh(devices, ("data",))
    sharding = NamedSharding(mesh, P("data"))
    x, corners = images_and_corners(8, seed=3)
    patches = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (8, SIZE, SIZE, 3)), jnp.float32)
    xy = corners[:, ::-1].astype(jnp.float32)
    boxes = jnp.concatenate([xy - 1, xy + SIZE - 1], axis=-1)  # centre = corner + 7: crop_boxes gives the corner back
    valid = jnp.arange(8) != 5

    def stage(x, patches, boxes, valid):
        c = face_crop.crop_boxes(boxes, valid, H, W, SIZE)
        return c, face_crop.crop(x, c, SIZE), face_crop.paste(x, patches, c)

    want = jax.jit(stage)(x, patches, boxes, valid)
    got = jax.jit(stage)(*jax.device_put((x, patches, boxes, valid), sharding))
    np.testing.assert_array_equal(want[0], np.where(np.asarray(valid)[:, None], corners, 0))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert g.sharding.is_equivalent_to(sharding, g.ndim), g.sharding  # still split over the batch
