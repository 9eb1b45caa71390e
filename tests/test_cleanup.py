import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.pose import cleanup, layout

K = layout.NUM_KEYPOINTS


def constant_sequence(T, x=100.0, y=200.0, conf=0.9):
    kps = np.zeros((T, K, 3), np.float32)
    kps[..., 0], kps[..., 1], kps[..., 2] = x, y, conf
    return kps


def linear_point(T, k=4):
    """Every point constant except point k, moving at (3, -2) px per frame."""
    kps = constant_sequence(T)
    t = np.arange(T, dtype=np.float32)
    kps[:, k, 0], kps[:, k, 1] = 10 + 3 * t, 500 - 2 * t
    kps[:, k, 2] = np.linspace(0.5, 0.95, T, dtype=np.float32)
    return kps


def drop(kps, frames, k):
    kps = kps.copy()
    kps[frames, k] = 0.0
    return kps


# ---------------------------------------------------------------- fill_gaps

def test_fill_gap_interpolates_linear_motion_exactly():
    truth = linear_point(12)
    kps = drop(truth, [4, 5, 6], k=4)
    out = cleanup.fill_gaps(kps, max_gap=3, fill_confidence=0.5)
    assert out.dtype == np.float32
    assert np.array_equal(out[:, 4, :2], truth[:, 4, :2])
    c_before, c_after = np.float64(kps[3, 4, 2]), np.float64(kps[7, 4, 2])
    expected = np.float32(0.5 * min(c_before, c_after))
    assert np.array_equal(out[4:7, 4, 2], np.full(3, expected))
    assert np.array_equal(np.delete(out, [4, 5, 6], axis=0), np.delete(kps, [4, 5, 6], axis=0))
    assert np.array_equal(out[4:7, np.arange(K) != 4], kps[4:7, np.arange(K) != 4])
    assert not np.shares_memory(out, kps) and not kps[4:7, 4].any()  # input untouched


def test_gap_longer_than_max_gap_stays_missing():
    kps = drop(linear_point(12), [3, 4, 5, 6], k=4)
    out = cleanup.fill_gaps(kps, max_gap=3)
    assert np.array_equal(out, kps)
    assert np.array_equal(cleanup.fill_gaps(kps, max_gap=0), kps)


def test_leading_and_trailing_gaps_stay_missing():
    kps = drop(linear_point(12), [0, 1, 10, 11], k=4)
    assert np.array_equal(cleanup.fill_gaps(kps, max_gap=5), kps)
    never = drop(linear_point(5), slice(None), k=7)
    assert np.array_equal(cleanup.fill_gaps(never, max_gap=5), never)


def test_fill_gaps_matches_per_point_reference():
    rng = np.random.default_rng(0)
    T = 40
    kps = rng.uniform(1, 1000, (T, K, 3)).astype(np.float32)
    kps[..., 2] = rng.uniform(0.1, 1.0, (T, K))
    kps[rng.random((T, K)) < 0.4] = 0.0
    out = cleanup.fill_gaps(kps, max_gap=2, fill_confidence=0.3)

    expected = kps.copy()
    for k in range(K):
        idx = np.flatnonzero(kps[:, k, 2] > 0)
        for a, b in zip(idx[:-1], idx[1:]):
            if 1 < b - a <= 3:
                for t in range(a + 1, b):
                    w = (t - a) / (b - a)
                    lo, hi = kps[a, k].astype(np.float64), kps[b, k].astype(np.float64)
                    expected[t, k, :2] = lo[:2] + w * (hi[:2] - lo[:2])
                    expected[t, k, 2] = 0.3 * min(lo[2], hi[2])
    assert np.array_equal(out, expected)


# ---------------------------------------------------------------- median

def test_median_removes_single_frame_spike_exactly():
    kps = constant_sequence(15)
    kps[7, :, :2] = (900.0, -40.0)
    out = cleanup.median_smooth(kps, window=3)
    assert np.array_equal(out, constant_sequence(15))


def test_median_keeps_linear_ramp_in_interior():
    kps = linear_point(20)
    out = cleanup.median_smooth(kps, window=5)
    assert np.array_equal(out[2:-2], kps[2:-2])
    assert np.array_equal(out[..., 2], kps[..., 2])


def test_median_ignores_and_keeps_missing_points():
    kps = drop(constant_sequence(10), [3, 5], k=2)
    out = cleanup.median_smooth(kps, window=5)
    assert np.array_equal(out, kps)  # (0, 0) of the dropouts did not leak into neighbours


# ---------------------------------------------------------------- One-Euro

def frame_jitter(kps):
    return np.diff(kps[..., :2], axis=0).std()


def test_one_euro_removes_jitter_of_still_points():
    rng = np.random.default_rng(1)
    kps = constant_sequence(300)
    kps[..., :2] += rng.normal(0, 2.0, (300, K, 2)).astype(np.float32)
    out = cleanup.one_euro_filter(kps, fps=30)
    settled = slice(30, None)
    assert frame_jitter(kps[settled]) / frame_jitter(out[settled]) > 4
    error = out[settled, :, :2] - (100, 200)
    assert np.abs(error).mean() < 0.5 * np.abs(kps[settled, :, :2] - (100, 200)).mean()
    assert abs(error.mean()) < 0.05  # no drift


def test_one_euro_follows_a_step_within_a_few_frames():
    kps = constant_sequence(60)
    kps[30:, :, 0] = 400.0
    out = cleanup.one_euro_filter(kps, fps=30)
    assert np.array_equal(out[:30], kps[:30])            # causal: nothing before the step moves
    assert out[30, 0, 0] > 250                             # most of the way on the first frame
    assert np.abs(out[33:, :, 0] - 400).max() < 1.0       # within a pixel three frames later


def test_one_euro_restarts_after_missing_point():
    kps = constant_sequence(20)
    kps[10:, 3, :2] = (700.0, 50.0)  # the point reappears elsewhere after a dropout
    kps = drop(kps, [8, 9], k=3)
    out = cleanup.one_euro_filter(kps, fps=25)
    assert not out[8:10, 3].any()
    assert np.array_equal(out[10:, 3], kps[10:, 3])


# ---------------------------------------------------------------- Savitzky-Golay

def test_savgol_keeps_quadratic_motion_and_short_runs():
    T = 30
    kps = constant_sequence(T)
    t = np.arange(T, dtype=np.float64)
    kps[:, 0, 0] = (0.5 * t**2 - 3 * t + 50).astype(np.float32)
    kps = drop(kps, [20], k=0)  # runs 0..19 (smoothed) and 21..29 (shorter than window)
    rng = np.random.default_rng(2)
    noisy = kps.copy()
    noisy[21:, 0, 0] += rng.normal(0, 1, 9).astype(np.float32)
    out = cleanup.savgol_smooth(noisy, window=11, order=2)
    np.testing.assert_allclose(out[:20, 0, 0], kps[:20, 0, 0], atol=1e-3)
    assert np.array_equal(out[20:, 0], noisy[20:, 0])


# ---------------------------------------------------------------- clean_sequence

@pytest.mark.parametrize("smoothing, params", [
    ("none", {}), ("median", {"window": 3}), ("one_euro", {"beta": 0.01}),
    ("savgol", {"window": 5, "order": 2}),
])
def test_clean_sequence_fills_then_smooths(smoothing, params):
    kps = drop(linear_point(16), [6, 7], k=4)
    kps = drop(kps, [0], k=9)
    out = cleanup.clean_sequence(kps, fps=30, max_gap=2, smoothing=smoothing,
                                 fill_confidence=0.4, **params)
    assert out.shape == kps.shape and out.dtype == np.float32
    assert np.all(out[6:8, 4, 2] > 0) and np.all(out[6:8, 4, 2] < 0.4)  # filled, marked
    assert not out[0, 9].any()                                          # leading gap kept
    if smoothing in ("none", "median", "savgol"):  # these leave linear motion alone
        np.testing.assert_allclose(out[3:-3, 4, :2], linear_point(16)[3:-3, 4, :2], atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"smoothing": "gaussian"}, r"smoothing='gaussian'.*none, median, one_euro, savgol"),
    ({"max_gap": -1}, r"max_gap=-1.*integer >= 0"),
    ({"max_gap": 2.5}, r"max_gap=2\.5"),
    ({"smoothing": "median", "window": 4}, r"median window=4.*odd integer"),
    ({"smoothing": "median", "beta": 1.0}, r"beta do not apply to smoothing='median'.*window"),
    ({"smoothing": "savgol", "window": 5, "order": 5}, r"order=5 is not below window=5"),
    ({"smoothing": "one_euro", "min_cutoff": 0}, r"min_cutoff=0"),
    ({"fps": 0}, r"fps=0"),
    ({"fill_confidence": 1.5}, r"fill_confidence=1\.5"),
])
def test_bad_parameters_raise_one_line_edn_error(kwargs, match):
    args = {"fps": 30, "max_gap": 2, **kwargs}
    with pytest.raises(EdnError, match=match) as info:
        cleanup.clean_sequence(constant_sequence(5), **args)
    assert "\n" not in str(info.value)


def test_wrong_shape_raises_edn_error():
    with pytest.raises(EdnError, match=r"\(T, 137, 3\)"):
        cleanup.median_smooth(np.zeros((5, 25, 3), np.float32), 3)
