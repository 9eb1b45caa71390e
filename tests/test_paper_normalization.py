"""The original release's pose normalization against values worked out by hand from its formulas: the
horizon rule, the range shrink, the 10% reset of the close height, frames without statistics, the fixed
anchor and the 7-frame sliding median."""

import jax
import numpy as np

from edn_jax.pose import layout
from edn_jax.pose import paper_normalization as pn

B = layout.B
W = 400


def person(toe, height, x=200.0, head="nose", ankles=2, extra=True):
    """A pose standing at ``toe`` (both ankles there, 10 px either side of x), ``height`` from its head
    point to the ankle midpoint; ``head``: "nose", "ears" (both ears at the nose's place) or "one ear"."""
    kps = np.zeros((layout.NUM_KEYPOINTS, 3), np.float32)
    if head == "nose":
        kps[B["Nose"]] = (x, toe - height, 0.9)
    elif head == "ears":
        kps[B["REar"]] = (x - 6, toe - height, 0.9)
        kps[B["LEar"]] = (x + 6, toe - height, 0.9)
    else:
        kps[B["REar"]] = (x - 6, toe - height, 0.9)
    kps[B["RAnkle"]] = (x - 10, toe, 0.9)
    if ankles == 2:
        kps[B["LAnkle"]] = (x + 10, toe, 0.9)
    if extra:
        kps[B["Neck"]] = (x, toe - 0.8 * height, 0.9)
    return kps


# Target: toes 100..200, median 130, so frames 100 (d=30), 110, 120 qualify for the horizon (d < 35): 100.
TGT_TOES = [100, 110, 120, 130, 140, 180, 200]
TGT_HEIGHTS = [50, 55, 60, 65, 70, 89, 100]
# Source: median 335, maxtoe 380; d < 22.5 leaves 320 (15) and 330 (5): horizon 320, range 60 < 100.
SRC_TOES = [300, 310, 320, 330, 340, 350, 360, 380]
SRC_HEIGHTS = [100, 104, 108, 112, 116, 120, 124, 132]


def target():
    return np.stack([person(t, h) for t, h in zip(TGT_TOES, TGT_HEIGHTS)])


def source():
    """Frame 0 has no head point (one ear), frames 1-8 the toes above (frame 3's head from its ears),
    frame 9 lacks its left ankle."""
    frames = [person(305, 100, head="one ear")]
    frames += [person(t, h, x=150 + 5 * i, head="ears" if i == 2 else "nose") for i, (t, h) in
               enumerate(zip(SRC_TOES, SRC_HEIGHTS))]
    frames.append(person(390, 136, ankles=1))
    return np.stack(frames)


def test_statistics_by_hand():
    tgt = pn.frame_measures(target())
    np.testing.assert_allclose(tgt.height, TGT_HEIGHTS, atol=1e-4)
    r = pn.video_range(tgt)
    assert (float(r.maxtoe), float(r.horizon)) == (200, 100)
    src = pn.frame_measures(source())
    assert list(np.asarray(src.valid)) == [False] + [True] * 8 + [False]
    assert (float(pn.video_range(src).maxtoe), float(pn.video_range(src).horizon)) == (380, 320)
    # A stationary video: no frame qualifies, the horizon is the median.
    still = pn.video_range(pn.frame_measures(np.stack([person(250, 90)] * 5)))
    assert (float(still.maxtoe), float(still.horizon)) == (250, 250)
    # Unshrunk target bands (width 5): 50 near 100; 100 near 200.
    assert [float(v) for v in pn.band_heights(tgt, r)] == [50, 100]


def test_transform_by_hand():
    s, dy, anchor = pn.paper_transform(source(), target(), W)
    # The source's range (60) is smaller than the target's (100): the target's becomes 120..180 about 150.
    # Bands of width 0.05 * 60 = 3: target 60 near 120 and 89 near 180, reset to 100 (100 - 89 > 10);
    # source 108 near 320 and 132 near 380.
    scale_far, scale_close = 60 / 108, 100 / 132
    toes = np.float32([0] + SRC_TOES + [0])
    p = (toes - 320) / 60
    want_dy = 120 + p * 60 - toes
    want_s = scale_far + p * (scale_close - scale_far)
    want_dy[0], want_s[0] = want_dy[1], want_s[1]      # before the first frame with statistics: the first's
    want_dy[9], want_s[9] = want_dy[8], want_s[8]      # without statistics: the last one's
    np.testing.assert_allclose(s, want_s, rtol=1e-6)
    np.testing.assert_allclose(dy, want_dy, atol=1e-4)
    np.testing.assert_allclose(anchor, [W / 2, 300])   # frame 1's lower ankle, fixed for the video

    out = np.asarray(pn.normalize_sequence_paper(source(), target(), W, window=1))  # no median
    src = source()
    for t in range(10):
        present = src[t, :, 2] > 0.05
        want_x = want_s[t] * src[t, present, 0] + (1 - want_s[t]) * W / 2
        want_y = want_s[t] * src[t, present, 1] + (1 - want_s[t]) * 300 + want_dy[t]
        np.testing.assert_allclose(out[t, present, 0], want_x, atol=1e-3)
        np.testing.assert_allclose(out[t, present, 1], want_y, atol=1e-3)
        np.testing.assert_array_equal(out[t, present, 2], src[t, present, 2])
        assert not out[t, ~present].any()
    # At p = 1 (the source's close position) the toe lands on the target's (shrunk) close position
    # only through dy: the anchor moves it by (s - 1) * (toe - a_y), as in the original.
    toe_y = out[8, B["RAnkle"], 1]
    np.testing.assert_allclose(toe_y, 180 + (scale_close - 1) * (380 - 300), atol=1e-3)


def test_sliding_median_by_hand():
    xs = np.float32([1, 2, 100, 3, 4, 5, 6])
    kps = np.zeros((7, layout.NUM_KEYPOINTS, 3), np.float32)
    kps[:, 0, 0], kps[:, 0, 1], kps[:, 0, 2] = xs, 10 * xs, 0.9
    # point 1: confident in 3 of 7 frames -> the median confidence over the window is 0: missing at t=3
    kps[[0, 3, 6], 1] = (5, 5, 0.8)
    # point 2: confident in 4 of 7 -> the median of the 4 confident entries
    kps[[0, 1, 4, 6], 2] = [(1, 1, 0.5), (3, 3, 0.6), (7, 7, 0.7), (9, 9, 0.8)]
    out = np.asarray(pn.sliding_median(kps))
    np.testing.assert_allclose(out[3, 0], (4, 40, 0.9))          # the outlier 100 is gone
    np.testing.assert_allclose(out[0, 0], (2.5, 25, 0.9))        # frames 0..3 at the start: mean of 2 and 3
    assert not out[3, 1].any()
    np.testing.assert_allclose(out[3, 2], (5, 5, 0.65))


def test_jit_and_vmap_match_one_call():
    f = jax.jit(pn.normalize_sequence_paper, static_argnums=2)
    one = np.asarray(f(source(), target(), W))
    # (A source moved as a whole lands where it did: the method is invariant to that.)
    moved = source().copy()
    moved[..., 1] += np.where(moved[..., 2] > 0, 7.0, 0.0)
    other = source().copy()
    other[1:8, B["Neck"], 0] += 30.0  # the neck off to one side for 7 frames
    out = jax.vmap(lambda s: pn.normalize_sequence_paper(s, target(), W))(np.stack([source(), moved, other]))
    np.testing.assert_allclose(np.asarray(out[0]), one, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out[1]), one, atol=1e-3)
    assert np.abs(np.asarray(out[2])[4, B["Neck"], 0] - one[4, B["Neck"], 0]) > 10


def test_a_source_without_statistics_stays_where_it_is():
    src = np.stack([person(300, 100, head="one ear")] * 8)
    out = np.asarray(pn.normalize_sequence_paper(src, target(), W))
    present = src[..., 2] > 0.05
    np.testing.assert_allclose(out[present], src[present], atol=1e-4)
