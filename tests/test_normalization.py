"""Global pose normalization on synthetic stick people whose geometry is known."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.pose import normalization as norm

T = 90  # one sequence length everywhere, so each jitted function compiles once
stats_fn = jax.jit(norm.pose_statistics)
transform_fn = jax.jit(norm.frame_transform)
normalize_fn = jax.jit(norm.normalize_sequence)
B = layout.B


def stick_pose(cx, ankle_y, height, rng):
    """One pose standing on ``ankle_y`` (the right foot), head top ``height`` above it."""
    k = np.zeros((layout.NUM_KEYPOINTS, 3), np.float32)
    top = ankle_y - height

    def put(i, dx, dy):  # offsets in units of height
        k[i] = (cx + dx * height, top + dy * height, 0.9)

    for name, dx, dy in [
        ("REye", -0.02, 0.0), ("LEye", 0.02, 0.0), ("REar", -0.04, 0.01), ("LEar", 0.04, 0.01),
        ("Nose", 0.0, 0.03), ("Neck", 0.0, 0.12), ("RShoulder", -0.12, 0.14),
        ("LShoulder", 0.12, 0.14), ("RElbow", -0.15, 0.3), ("LElbow", 0.15, 0.3),
        ("RWrist", -0.16, 0.45), ("LWrist", 0.16, 0.45), ("MidHip", 0.0, 0.5),
        ("RHip", -0.06, 0.5), ("LHip", 0.06, 0.5), ("RKnee", -0.06, 0.75),
        ("LKnee", 0.06, 0.74), ("RAnkle", -0.06, 1.0), ("LAnkle", 0.06, 0.97),
        ("RHeel", -0.07, 1.01), ("RBigToe", -0.03, 1.02), ("RSmallToe", -0.05, 1.02),
        ("LHeel", 0.05, 0.98), ("LBigToe", 0.09, 0.99), ("LSmallToe", 0.07, 0.99),
    ]:
        put(B[name], dx, dy)
    angles = np.linspace(0, 2 * np.pi, layout.NUM_FACE, endpoint=False)
    for j, a in enumerate(angles):
        put(layout.FACE.start + j, 0.04 * np.cos(a), 0.03 + 0.05 * np.sin(a))
    for block, wrist in ((layout.LEFT_HAND, B["LWrist"]), (layout.RIGHT_HAND, B["RWrist"])):
        wx, wy = k[wrist, 0], k[wrist, 1]
        for j in range(layout.NUM_HAND):
            k[block.start + j] = (wx + 0.003 * j * height, wy + 0.004 * (j % 5) * height, 0.8)
    k[:, :2] += rng.normal(0, 0.3, (layout.NUM_KEYPOINTS, 2))  # detector jitter
    missing = rng.random(layout.NUM_KEYPOINTS) < 0.05  # a few undetected points
    missing[list(layout.ANKLES) + list(layout.HEAD) + [B["Neck"]]] = False
    k[missing] = 0.0
    return k


def walk(ankle_far, ankle_close, height_at, cx0=320.0, sway=60.0, seed=0, ankles=None):
    """A person walking far -> close -> far with height ``height_at(ankle_y)`` and x sway."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, T)
    if ankles is None:
        ankles = ankle_far + (ankle_close - ankle_far) * 0.5 * (1 - np.cos(2 * np.pi * t))
    xs = cx0 + sway * np.sin(2 * np.pi * 1.5 * t)
    return np.stack([stick_pose(x, a, height_at(a), rng) for x, a in zip(xs, ankles)])


def target_seq():
    return walk(300.0, 450.0, lambda a: 150.0 + 0.8 * (a - 300.0), seed=1)


def drop_ankles(seq, frames):
    seq = seq.copy()
    seq[np.ix_(frames, list(layout.ANKLES))] = 0.0
    return seq


def assert_missing_stay_zero(inp, out):
    gone = inp[..., 2] <= 0.05
    assert gone.any()
    np.testing.assert_array_equal(out[gone], 0.0)
    np.testing.assert_array_equal(out[~gone][:, 2], inp[~gone][:, 2])


def test_identity_when_source_is_target():
    tgt = target_seq()
    stats = stats_fn(tgt)
    out = np.asarray(normalize_fn(tgt, stats, stats))
    np.testing.assert_allclose(out, tgt, atol=1e-4)
    assert_missing_stay_zero(tgt, out)
    # The statistics match the geometry that generated the walk.
    assert 300.0 <= float(stats.ankle_far) < 303.0 and 447.0 < float(stats.ankle_close) <= 450.0
    np.testing.assert_allclose(float(stats.height_far), 150.0 + 0.8 * (float(stats.ankle_far) - 300), atol=3.0)
    np.testing.assert_allclose(float(stats.height_close), 150.0 + 0.8 * (float(stats.ankle_close) - 300), atol=3.0)
    assert float(stats.num_valid) == T


@pytest.mark.parametrize("k, dx, dy", [(1.25, 40.0, -30.0), (0.7, -15.0, 60.0)])
def test_shifted_scaled_source_maps_back_to_target(k, dx, dy):
    tgt = target_seq()
    src = tgt.copy()
    seen = src[..., 2] > 0
    src[..., 0] = np.where(seen, k * tgt[..., 0] + dx, 0.0)
    src[..., 1] = np.where(seen, k * tgt[..., 1] + dy, 0.0)
    src_stats, tgt_stats = stats_fn(src), stats_fn(tgt)
    np.testing.assert_allclose(float(src_stats.height_far), k * float(tgt_stats.height_far), rtol=1e-5)
    out = np.asarray(normalize_fn(src, src_stats, tgt_stats))
    np.testing.assert_allclose(out, tgt, atol=1e-3)
    assert_missing_stay_zero(src, out)


def test_scale_interpolates_monotonically_between_far_and_close():
    tgt_stats = stats_fn(target_seq())
    sweep = np.linspace(350.0, 420.0, T)  # source walks straight from far to close
    src = walk(350.0, 420.0, lambda a: 200.0 + 1.2 * (a - 350.0), seed=2, ankles=sweep)
    src_stats = stats_fn(src)
    scale, translation = map(np.asarray, transform_fn(src, src_stats, tgt_stats))
    ratio_far = float(tgt_stats.height_far) / float(src_stats.height_far)
    ratio_close = float(tgt_stats.height_close) / float(src_stats.height_close)
    assert ratio_close > ratio_far + 0.1  # the target grows faster towards the camera
    # Monotonic in the measured floor ankle (detector jitter can reorder adjacent frames).
    src_ankle = np.asarray(norm.frame_ankle_y(jnp.asarray(src))[0])
    assert np.all(np.diff(scale[np.argsort(src_ankle)]) >= -1e-6)
    np.testing.assert_allclose(scale[0], ratio_far, rtol=1e-5)
    np.testing.assert_allclose(scale[-1], ratio_close, rtol=1e-5)
    # Inside the range scale is linear in the ankle position, and the ankle lands
    # on the matching target ankle position.
    alpha = (src_ankle - float(src_stats.ankle_far)) / float(src_stats.ankle_close - src_stats.ankle_far)
    inside = (alpha > 0) & (alpha < 1)
    assert inside.sum() > T // 2
    np.testing.assert_allclose(scale[inside], ratio_far + alpha[inside] * (ratio_close - ratio_far), rtol=1e-4)
    mapped = scale * src_ankle + translation[:, 1]
    expected = float(tgt_stats.ankle_far) + alpha * float(tgt_stats.ankle_close - tgt_stats.ankle_far)
    np.testing.assert_allclose(mapped[inside], expected[inside], atol=1e-3)
    # Unclipped, the frames beyond the percentile range extrapolate past the end ratios.
    loose, _ = jax.jit(norm.frame_transform, static_argnames="clip")(src, src_stats, tgt_stats, clip=False)
    loose = np.asarray(loose)
    np.testing.assert_allclose(loose[inside], scale[inside], rtol=1e-6)
    assert loose[0] < ratio_far and loose[-1] > ratio_close
    # Walking back from close to far retraces the same scales.
    back, _ = transform_fn(src[::-1], src_stats, tgt_stats)
    np.testing.assert_allclose(np.asarray(back), scale[::-1], rtol=1e-6)


def test_frames_without_ankles_take_nearest_valid_transform():
    tgt = target_seq()
    src = walk(340.0, 430.0, lambda a: 180.0 + (a - 340.0), cx0=250.0, seed=3)
    gaps = [0, 1, 2, 40, 41]
    holey = drop_ankles(src, gaps)
    stats = stats_fn(holey)
    kept = np.delete(holey, gaps, axis=0)
    expected = norm.pose_statistics(kept)  # stats ignore frames without ankles
    np.testing.assert_allclose(np.array(stats), np.array(expected), rtol=1e-5)
    assert float(stats.num_valid) == T - len(gaps)

    tgt_stats = stats_fn(tgt)
    scale, translation = map(np.asarray, transform_fn(holey, stats, tgt_stats))
    for frame, nearest in [(0, 3), (1, 3), (2, 3), (40, 39), (41, 42)]:
        assert scale[frame] == scale[nearest] and np.all(translation[frame] == translation[nearest])
    out = np.asarray(normalize_fn(holey, stats, tgt_stats))
    assert np.isfinite(out).all()
    assert_missing_stay_zero(holey, out)
    assert (out[gaps][:, B["Neck"], 2] > 0).all()  # the rest of those bodies still moves

    nobody = drop_ankles(src, list(range(T)))  # no ankle anywhere: mid-range, finite
    empty_stats = stats_fn(nobody)
    assert float(empty_stats.num_valid) == 0
    scale, _ = transform_fn(nobody, stats, tgt_stats)
    ratios = [float(tgt_stats.height_far / stats.height_far), float(tgt_stats.height_close / stats.height_close)]
    np.testing.assert_allclose(np.asarray(scale), np.mean(ratios), rtol=1e-5)
    assert np.isfinite(np.asarray(normalize_fn(nobody, empty_stats, tgt_stats))).all()


def test_jit_and_vmap_match_a_loop():
    seqs = np.stack([
        walk(300.0 + 10 * i, 420.0 + 15 * i, lambda a, i=i: 140.0 + (0.6 + 0.2 * i) * (a - 300.0), seed=10 + i)
        for i in range(3)
    ])
    seqs[1] = drop_ankles(seqs[1], [0, 5, 6])
    tgt_stats = stats_fn(target_seq())
    batch_stats = jax.jit(jax.vmap(norm.pose_statistics))(seqs)
    batch_out = jax.jit(jax.vmap(norm.normalize_sequence, in_axes=(0, 0, None)))(seqs, batch_stats, tgt_stats)
    for i, seq in enumerate(seqs):
        one = stats_fn(seq)
        np.testing.assert_allclose(np.array([f[i] for f in batch_stats]), np.array(one), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(batch_out[i]), np.asarray(normalize_fn(seq, one, tgt_stats)), atol=1e-4)
    # The eager (unjitted) path agrees too.
    np.testing.assert_allclose(np.asarray(norm.normalize_sequence(seqs[0], norm.pose_statistics(seqs[0]), tgt_stats)),
                               np.asarray(batch_out[0]), atol=1e-3)


def test_stats_dict_round_trip():
    stats = stats_fn(target_seq())
    d = json.loads(json.dumps(norm.stats_to_dict(stats)))
    assert set(d) == set(norm.PoseStats._fields) and all(isinstance(v, float) for v in d.values())
    back = norm.stats_from_dict(d)
    for a, b in zip(back, stats):
        assert a.dtype == jnp.float32 and float(a) == float(b)
    del d["height_close"]
    with pytest.raises(EdnError, match="height_close"):
        norm.stats_from_dict(d)


def test_stationary_person_is_degenerate_but_finite():
    still = walk(380.0, 380.0, lambda a: 200.0, seed=4)  # ankle constant up to jitter; x still sways
    stats = stats_fn(still)
    assert 0.0 < float(stats.ankle_close - stats.ankle_far) < 0.03 * 200.0  # jitter only
    height, height_ok = map(np.asarray, norm.frame_height(jnp.asarray(still)))
    assert height_ok.all()
    overall = float(np.mean(height))
    np.testing.assert_allclose([float(stats.height_far), float(stats.height_close)], overall, rtol=1e-5)

    out = np.asarray(normalize_fn(still, stats, stats))
    np.testing.assert_allclose(out, still, atol=1e-4)

    tgt_stats = stats_fn(target_seq())
    scale, translation = map(np.asarray, transform_fn(still, stats, tgt_stats))
    ratio_far = float(tgt_stats.height_far) / float(stats.height_far)
    ratio_close = float(tgt_stats.height_close) / float(stats.height_close)
    np.testing.assert_allclose(scale, 0.5 * (ratio_far + ratio_close), rtol=1e-5)  # alpha = 0.5: constant
    assert np.ptp(translation, axis=0).max() == 0.0
    out = np.asarray(normalize_fn(still, stats, tgt_stats))
    assert np.isfinite(out).all()
    mid_target = 0.5 * float(tgt_stats.ankle_far + tgt_stats.ankle_close)
    np.testing.assert_allclose(np.median(out[:, B["RAnkle"], 1]), mid_target, atol=1.0)


def test_statistics_stored_before_the_travel_range_read_as_unknown():
    """A dataset built before ankle_left/ankle_right existed: its statistics load, with the travel range
    unknown (transfer then recomputes the statistics from the dataset's poses)."""
    stats = stats_fn(target_seq())
    assert norm.has_travel_range(stats)
    assert float(stats.ankle_left) < float(stats.center_x) < float(stats.ankle_right)
    old = {k: v for k, v in norm.stats_to_dict(stats).items() if k not in norm.TRAVEL_FIELDS}
    back = norm.stats_from_dict(old)
    assert not norm.has_travel_range(back)
    assert float(back.center_x) == pytest.approx(float(stats.center_x))
