"""Stick-figure rendering, frame geometry and face boxes (edn_jax.pose.render)."""

import cv2
import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.pose import layout as L
from edn_jax.pose import render as R

BLACK = (0, 0, 0)


def _rot(v, degrees):
    a = np.deg2rad(degrees)
    return np.array([v[0] * np.cos(a) - v[1] * np.sin(a), v[0] * np.sin(a) + v[1] * np.cos(a)])


def standing_pose(height, width, conf=0.9):
    """A person facing the camera, left arm raised, with face and both hands, fit to the frame."""
    u = {  # body in a unit box (x right, y down); "R" is the subject's right = image left
        "Nose": (0.50, 0.145), "Neck": (0.50, 0.23), "RShoulder": (0.41, 0.25), "RElbow": (0.37, 0.38),
        "RWrist": (0.36, 0.50), "LShoulder": (0.59, 0.25), "LElbow": (0.69, 0.31), "LWrist": (0.74, 0.20),
        "MidHip": (0.50, 0.52), "RHip": (0.45, 0.52), "RKnee": (0.44, 0.70), "RAnkle": (0.43, 0.88),
        "LHip": (0.55, 0.52), "LKnee": (0.57, 0.70), "LAnkle": (0.58, 0.88), "REye": (0.482, 0.128),
        "LEye": (0.518, 0.128), "REar": (0.462, 0.135), "LEar": (0.538, 0.135), "LBigToe": (0.62, 0.915),
        "LSmallToe": (0.635, 0.905), "LHeel": (0.575, 0.9), "RBigToe": (0.39, 0.915),
        "RSmallToe": (0.375, 0.905), "RHeel": (0.435, 0.9),
    }
    pts = np.zeros((L.NUM_KEYPOINTS, 2))
    for name, xy in u.items():
        pts[L.B[name]] = xy
    face = pts[L.FACE]
    cx = 0.5
    for i in L.FACE_JAW:
        t = np.pi * i / 16
        face[i] = (cx - 0.036 * np.cos(t), 0.13 + 0.055 * np.sin(t))
    for brow, sign in ((L.FACE_RIGHT_BROW, -1), (L.FACE_LEFT_BROW, 1)):
        for k, i in enumerate(brow):
            s = k / 4 if sign > 0 else 1 - k / 4
            face[i] = (cx + sign * (0.006 + 0.026 * s), 0.117 - 0.004 * np.sin(np.pi * s))
    for k, i in enumerate(L.FACE_NOSE_BRIDGE):
        face[i] = (cx, 0.125 + 0.007 * k)
    for k, i in enumerate(L.FACE_NOSE_BOTTOM):
        face[i] = (cx - 0.01 + 0.005 * k, 0.148 + 0.002 * np.sin(np.pi * k / 4))
    for eye, ex in ((L.FACE_RIGHT_EYE, cx - 0.018), (L.FACE_LEFT_EYE, cx + 0.018)):
        for k, i in enumerate(eye):
            t = 2 * np.pi * k / 6
            face[i] = (ex - 0.009 * np.cos(t), 0.128 - 0.0035 * np.sin(t))
    for lips, a, b in ((L.FACE_OUTER_LIPS, 0.016, 0.007), (L.FACE_INNER_LIPS, 0.011, 0.0025)):
        n = len(lips)
        for k, i in enumerate(lips):
            t = 2 * np.pi * k / n
            face[i] = (cx - a * np.cos(t), 0.165 - b * np.sin(t))
    face[L.FACE_RIGHT_PUPIL] = (cx - 0.018, 0.128)
    face[L.FACE_LEFT_PUPIL] = (cx + 0.018, 0.128)
    pts[L.FACE] = face
    for part, elbow, wrist, sign in (("right_hand", "RElbow", "RWrist", 1), ("left_hand", "LElbow", "LWrist", -1)):
        w = pts[L.B[wrist]]
        d = w - pts[L.B[elbow]]
        d = d / np.linalg.norm(d)
        hand = pts[L.PARTS[part]]
        hand[0] = w
        for f, (finger, spread, base) in enumerate(zip(L.HAND_FINGERS, (-55, -18, 0, 16, 32), (0.012, 0.028, 0.029, 0.027, 0.024))):
            fd = _rot(d, sign * spread)
            p = w + fd * base
            for k, i in enumerate(finger):
                hand[i] = p
                p = p + _rot(fd, sign * (8 if f == 0 else 0)) * (0.011, 0.011, 0.009, 0.007)[k]
        pts[L.PARTS[part]] = hand
    kps = np.zeros((L.NUM_KEYPOINTS, 3), np.float32)
    kps[:, 0] = width / 2 + (pts[:, 0] - 0.5) * height
    kps[:, 1] = pts[:, 1] * height
    kps[:, 2] = conf
    return kps


def _only(kps, indices):
    """Copy of ``kps`` with every point outside ``indices`` missing."""
    out = np.zeros_like(kps)
    out[list(indices)] = kps[list(indices)]
    return out


def _pixel(img, xy):
    return tuple(int(v) for v in img[int(round(xy[1])), int(round(xy[0]))])


# --------------------------------------------------------------------------- stick figures


def test_render_is_deterministic_and_batched_matches_single():
    kps = standing_pose(512, 1024)
    a = R.render_stick_figure(kps, 512, 1024)
    b = R.render_stick_figure(kps.copy(), 512, 1024)
    assert a.dtype == np.uint8 and a.shape == (512, 1024, 3)
    assert np.array_equal(a, b)
    seq = np.stack([kps, standing_pose(512, 1024, conf=0.0), kps + np.float32([3, -2, 0])])
    batch = R.render_stick_figures(seq, 512, 1024)
    assert batch.shape == (3, 512, 1024, 3) and batch.dtype == np.uint8
    for t in range(3):
        assert np.array_equal(batch[t], R.render_stick_figure(seq[t], 512, 1024))
    assert R.render_stick_figures(np.zeros((0, 137, 3), np.float32), 8, 8).shape == (0, 8, 8, 3)


@pytest.mark.parametrize("limb", range(len(L.BODY_LIMBS)))
def test_limb_midpoint_has_exactly_the_limb_colour(limb):
    kps = standing_pose(512, 1024)
    a, b = L.BODY_LIMBS[limb]
    img = R.render_stick_figure(_only(kps, (a, b)), 512, 1024, thickness=5)
    mid = (kps[a, :2] + kps[b, :2]) / 2
    assert _pixel(img, mid) == L.BODY_LIMB_COLOURS[limb]


def test_limb_colours_survive_in_the_full_figure():
    kps = standing_pose(256, 256)
    img = R.render_stick_figure(kps, 256, 256)  # default thickness at 256 is 3
    for a, b in [(1, 8), (2, 3), (3, 4), (5, 6), (6, 7), (9, 10), (10, 11), (12, 13), (13, 14)]:
        colour = L.BODY_LIMB_COLOURS[L.BODY_LIMBS.index((a, b))]
        assert _pixel(img, (kps[a, :2] + kps[b, :2]) / 2) == colour


def test_limb_with_a_missing_or_unconfident_end_is_not_drawn():
    kps = standing_pose(256, 256)
    arm = _only(kps, (L.B["RShoulder"], L.B["RElbow"], L.B["RWrist"]))
    arm[L.B["RWrist"], 2] = 0.0  # missing, yet with coordinates
    upper = (arm[L.B["RShoulder"], :2] + arm[L.B["RElbow"], :2]) / 2
    lower = (arm[L.B["RElbow"], :2] + arm[L.B["RWrist"], :2]) / 2
    img = R.render_stick_figure(arm, 256, 256, thickness=4)
    assert _pixel(img, upper) == L.BODY_LIMB_COLOURS[L.BODY_LIMBS.index((2, 3))]
    assert _pixel(img, lower) == BLACK
    assert _pixel(img, arm[L.B["RWrist"], :2]) == BLACK  # nor its joint
    arm[L.B["RWrist"], 2] = 0.04  # below the default threshold 0.05
    assert _pixel(R.render_stick_figure(arm, 256, 256, thickness=4), lower) == BLACK
    assert _pixel(R.render_stick_figure(arm, 256, 256, 0.03, thickness=4), lower) != BLACK


@pytest.mark.parametrize("hw", [(64, 64), (256, 256), (512, 1024), (1080, 1920), (1920, 1080)])
def test_all_missing_pose_is_black_at_any_size(hw):
    kps = standing_pose(*hw, conf=0.0)  # coordinates set, confidence 0
    img = R.render_stick_figure(kps, *hw)
    assert img.shape == hw + (3,) and not img.any()
    assert not R.render_stick_figure(L.empty_pose(), *hw).any()


def _torso_width(img, kps):
    """Width in pixels of the vertical Neck-MidHip line, halfway down."""
    y = int(round((kps[L.B["Neck"], 1] + kps[L.B["MidHip"], 1]) / 2))
    return int(img[y].any(axis=-1).sum())


def test_any_size_works_and_thickness_grows_with_size():
    sizes = [(64, 64), (256, 256), (512, 1024), (1080, 1920)]
    thick = [R.stick_thickness(*hw) for hw in sizes]
    assert thick[0] >= 1 and thick == sorted(thick) and len(set(thick)) == len(thick)
    assert R.stick_thickness(1920, 1080) == R.stick_thickness(1080, 1920)
    widths = []
    for hw in sizes + [(1920, 1080)]:
        kps = standing_pose(*hw)
        img = R.render_stick_figure(kps, *hw)
        assert img.shape == hw + (3,) and img.dtype == np.uint8 and img.any()
        widths.append(_torso_width(img, kps))
    assert widths[:4] == sorted(widths[:4]) and len(set(widths[:4])) == 4
    assert widths[1] >= 3
    # An explicit thickness overrides the size rule.
    kps = standing_pose(256, 256)
    assert _torso_width(R.render_stick_figure(kps, 256, 256, thickness=9), kps) > widths[1]
    with pytest.raises(EdnError):
        R.render_stick_figure(kps, 256, 256, thickness=0)


def test_face_edges_and_pupils_in_face_colour():
    kps = standing_pose(1024, 1024)
    face = _only(kps, range(L.FACE.start, L.FACE.stop))
    img = R.render_stick_figure(face, 1024, 1024, thickness=12)  # face lines 3 px
    assert img.any()
    base = L.FACE.start
    for a, b in [(0, 1), (8, 9), (15, 16), (18, 19), (27, 28)]:
        assert _pixel(img, (kps[base + a, :2] + kps[base + b, :2]) / 2) == L.FACE_COLOUR
    assert _pixel(img, kps[base + L.FACE_LEFT_PUPIL, :2]) == L.FACE_COLOUR
    # Only face colour (and its anti-aliased fringe) appears: no body colours.
    grey = img[..., 0] == img[..., 1]
    assert np.all(grey & (img[..., 1] == img[..., 2]))


def _fanned_hand(cx, cy, sign):
    """A wide-open hand (wrist at cx, cy; fingers fanned upwards) so bones never overlap."""
    hand = np.zeros((L.NUM_HAND, 3), np.float32)
    hand[0] = (cx, cy, 1)
    for f, finger in enumerate(L.HAND_FINGERS):
        angle = np.deg2rad(-90 + sign * (f - 2) * 35)
        for k, i in enumerate(finger):
            r = 40 + 30 * k
            hand[i] = (cx + r * np.cos(angle), cy + r * np.sin(angle), 1)
    return hand


def test_hand_bones_in_their_finger_colours():
    kps = L.empty_pose()
    kps[L.LEFT_HAND] = _fanned_hand(350, 300, 1)
    kps[L.RIGHT_HAND] = _fanned_hand(150, 300, -1)
    img = R.render_stick_figure(kps, 400, 500, thickness=8)  # hand lines 4 px
    for part in ("left_hand", "right_hand"):
        hand = kps[L.PARTS[part]]
        for f, finger in enumerate(L.HAND_FINGERS):
            colour = L.HAND_FINGER_COLOURS[part][f]
            for a, b in [(0, finger[0]), (finger[1], finger[2]), (finger[2], finger[3])]:
                assert _pixel(img, (hand[a, :2] + hand[b, :2]) / 2) == colour, (part, f, a, b)


def test_overlay_copies_and_blends():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    before = frame.copy()
    kps = standing_pose(256, 256)
    out = R.draw_overlay(frame, kps, alpha=0.75)
    assert np.array_equal(frame, before)  # input untouched
    assert out.dtype == np.uint8 and out.shape == frame.shape
    figure = R.render_stick_figure(kps, 256, 256)
    assert np.array_equal(out[~figure.any(-1)], frame[~figure.any(-1)])
    mid = (kps[1, :2] + kps[8, :2]) / 2
    x, y = int(round(mid[0])), int(round(mid[1]))
    want = 0.75 * np.array(L.BODY_LIMB_COLOURS[0]) + 0.25 * frame[y, x]
    assert np.abs(out[y, x] - want).max() <= 1
    assert np.array_equal(R.draw_overlay(frame, kps), R.draw_overlay(frame, kps))
    with pytest.raises(EdnError):
        R.draw_overlay(frame.astype(np.float32), kps)


def test_bad_shapes_and_sizes_raise_edn_error():
    with pytest.raises(EdnError):
        R.render_stick_figure(np.zeros((25, 3)), 64, 64)
    with pytest.raises(EdnError):
        R.render_stick_figures(L.empty_pose(), 64, 64)
    with pytest.raises(EdnError):
        R.render_stick_figure(L.empty_pose(), 0, 64)


def test_non_finite_or_far_away_points_do_not_crash():
    kps = standing_pose(128, 128)
    kps[L.B["RWrist"]] = (np.nan, 5, 1)
    kps[L.B["LWrist"]] = (1e12, -1e12, 1)
    img = R.render_stick_figure(kps, 128, 128)
    assert img.any()
    assert np.array_equal(img, R.render_stick_figure(kps, 128, 128))


# --------------------------------------------------------------------------- geometry


def _marker_centroid(img):
    w = img.astype(np.float64)
    if w.ndim == 3:
        w = w.sum(-1)
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


@pytest.mark.parametrize("mode", ["pad", "crop"])
@pytest.mark.parametrize("src_hw", [(1080, 1920), (1920, 1080), (333, 250)])
@pytest.mark.parametrize("out_hw", [(256, 256), (512, 1024), (1024, 512), (720, 1280)])
def test_marker_lands_on_transformed_keypoint(mode, src_hw, out_hw):
    tf = R.fit_transform(src_hw, out_hw, mode)
    sh, sw = src_hw
    r = max(2, int(np.ceil(3 / tf.scale)))  # marker at least ~6 output px wide
    for fx, fy in [(0.42, 0.45), (0.57, 0.6)]:
        x, y = int(sw * fx), int(sh * fy)
        img = np.zeros((sh, sw, 3), np.uint8)
        img[y - r:y + r + 1, x - r:x + r + 1] = 255
        kps = L.empty_pose()
        kps[0] = (x, y, 1)
        out = R.transform_image(img, tf)
        assert out.shape == out_hw + (3,) and out.dtype == np.uint8
        got = _marker_centroid(out)
        want = R.transform_keypoints(kps, tf)[0, :2]
        assert np.abs(got - want).max() < 0.35, (got, want)


@pytest.mark.parametrize("src_hw,out_hw", [((1080, 1920), (256, 256)), ((1920, 1080), (512, 1024)),
                                           ((100, 100), (300, 200)), ((480, 640), (480, 640))])
def test_pad_letterboxes_centred_and_crop_fills(src_hw, out_hw):
    white = np.full(src_hw + (3,), 255, np.uint8)
    pad = R.transform_image(white, R.fit_transform(src_hw, out_hw, "pad"))
    rows, cols = pad.any(-1).any(1), pad.any(-1).any(0)
    # Content spans one dimension fully; the bars on both sides differ by at most a pixel.
    assert rows.all() or cols.all()
    for used in (rows, cols):
        idx = np.flatnonzero(used)
        before, after = idx[0], len(used) - 1 - idx[-1]
        assert abs(before - after) <= 1 and used[idx[0]:idx[-1] + 1].all()
    crop = R.transform_image(white, R.fit_transform(src_hw, out_hw, "crop"))
    assert crop.shape == out_hw + (3,) and (crop == 255).all()


def test_transform_image_keeps_dtype_and_channels():
    tf = R.fit_transform((90, 160), (64, 64), "pad")
    assert R.transform_image(np.ones((90, 160), np.uint8), tf).shape == (64, 64)
    assert R.transform_image(np.ones((90, 160, 1), np.float32), tf).shape == (64, 64, 1)
    assert R.transform_image(np.ones((90, 160, 1), np.float32), tf).dtype == np.float32


def test_transform_keypoints_is_affine_and_keeps_missing_zero():
    tf = R.fit_transform((1080, 1920), (256, 256), "pad")
    assert tf == R.FrameTransform(256 / 1920, 0, 56, 256, 256)
    kps = np.stack([standing_pose(1080, 1920)] * 2)
    kps[1, 5] = (700, 300, 0)  # missing, with coordinates
    out = R.transform_keypoints(kps, tf)
    assert out.shape == kps.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 5], 0)
    np.testing.assert_allclose(out[0, 5, :2], (kps[0, 5, :2] + 0.5) * tf.scale - 0.5 + np.array([0, 56]),
                               rtol=1e-6)
    np.testing.assert_allclose(out[..., 2], kps[..., 2])
    crop = R.fit_transform((1080, 1920), (256, 256), "crop")
    assert crop.scale == 256 / 1080 and crop.offset_y == 0 and crop.offset_x == -((455 - 256) // 2)
    with pytest.raises(EdnError):
        R.fit_transform((1080, 1920), (256, 256), "stretch")
    with pytest.raises(EdnError):
        R.fit_transform((0, 1920), (256, 256))


# --------------------------------------------------------------------------- face boxes


def _assert_square_inside(box, h, w):
    x0, y0, x1, y1 = box
    assert x1 - x0 == pytest.approx(y1 - y0, abs=1e-3)
    assert 0 <= x0 and 0 <= y0 and x1 <= w + 1e-3 and y1 <= h + 1e-3


def test_face_box_contains_face_and_is_square_inside_frame():
    h, w = 512, 1024
    kps = standing_pose(h, w)
    box, valid = R.face_box(kps, h, w, box_scale=1.5, min_size=32)
    assert valid and box.dtype == np.float32 and box.shape == (4,)
    _assert_square_inside(box, h, w)
    face = kps[L.FACE, :2]
    assert (face >= box[:2]).all() and (face <= box[2:]).all()
    extent = (face.max(0) - face.min(0)).max()
    assert box[2] - box[0] == pytest.approx(max(1.5 * extent, 32), rel=1e-5)
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, (face.min(0) + face.max(0)) / 2, atol=1e-3)
    # A tiny face gets min_size.
    big, _ = R.face_box(kps, h, w, min_size=200)
    assert big[2] - big[0] == pytest.approx(200)


def test_face_box_near_border_is_shifted_and_keeps_its_size():
    h, w = 512, 1024
    kps = standing_pose(h, w)
    face_c = (kps[L.FACE, :2].min(0) + kps[L.FACE, :2].max(0)) / 2
    free, _ = R.face_box(kps, h, w, min_size=100)
    for target in [(0, 0), (w - 1, h - 1), (3, h / 2), (w / 2, h + 5)]:
        moved = kps.copy()
        moved[:, :2] += np.float32(target) - face_c
        box, valid = R.face_box(moved, h, w, min_size=100)
        assert valid
        _assert_square_inside(box, h, w)
        assert box[2] - box[0] == pytest.approx(free[2] - free[0], rel=1e-5)
    # A frame smaller than the box shrinks it to the frame.
    box, valid = R.face_box(kps, 80, w, min_size=100)
    assert valid and box[3] - box[1] == pytest.approx(80)
    _assert_square_inside(box, 80, w)


def test_face_box_falls_back_to_head_points_then_invalid():
    h, w = 512, 1024
    kps = standing_pose(h, w)
    no_face = kps.copy()
    no_face[L.FACE] = 0
    box, valid = R.face_box(no_face, h, w, min_size=8)
    assert valid
    head = kps[list(L.HEAD), :2]
    assert (head >= box[:2]).all() and (head <= box[2:]).all()
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, (head.min(0) + head.max(0)) / 2, atol=1e-3)
    headless = no_face.copy()
    headless[list(L.HEAD), 2] = 0.01  # below threshold
    box, valid = R.face_box(headless, h, w)
    assert not valid and not box.any()
    assert R.fixed_size_face_box(headless, h, w, 64)[1] is False


def test_face_boxes_batched_matches_single():
    h, w = 512, 1024
    kps = standing_pose(h, w)
    no_face = kps.copy()
    no_face[L.FACE] = 0
    seq = np.stack([kps, no_face, L.empty_pose(), kps + np.float32([400, 300, 0])])
    boxes, valid = R.face_boxes(seq, h, w)
    assert boxes.shape == (4, 4) and valid.tolist() == [True, True, False, True]
    for t in range(4):
        box, v = R.face_box(seq[t], h, w)
        assert v == valid[t] and np.array_equal(box, boxes[t])
    with pytest.raises(EdnError):
        R.face_box(kps, h, w, box_scale=0.5)


def test_fixed_size_face_box_exact_size_inside_frame():
    h, w = 512, 1024
    kps = standing_pose(h, w)
    face_c = (kps[L.FACE, :2].min(0) + kps[L.FACE, :2].max(0)) / 2
    for size in (128, 127):
        box, valid = R.fixed_size_face_box(kps, h, w, size)
        assert valid and box.dtype == np.int32
        x0, y0, x1, y1 = box.tolist()
        assert x1 - x0 == size and y1 - y0 == size
        # Pixels x0..x1-1 are centred on the face centre to within half a pixel.
        np.testing.assert_array_less(np.abs(np.array([x0, y0]) + (size - 1) / 2 - face_c), 0.5 + 1e-6)
    for target in [(0, 0), (w - 1, h - 1), (w - 1, 0), (10, h / 2)]:
        moved = kps.copy()
        moved[:, :2] += np.float32(target) - face_c
        x0, y0, x1, y1 = R.fixed_size_face_box(moved, h, w, 128)[0].tolist()
        assert x1 - x0 == 128 and y1 - y0 == 128
        assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
    assert R.fixed_size_face_box(kps, h, w, h)[0].tolist()[1::2] == [0, h]
    with pytest.raises(EdnError):
        R.fixed_size_face_box(kps, h, w, h + 1)
    with pytest.raises(EdnError):
        R.fixed_size_face_box(kps, h, w, 0)


def test_identity_transform_is_exact():
    rng = np.random.default_rng(7)
    kps = np.concatenate([rng.uniform(0, 500, (4, 137, 2)), rng.uniform(0.1, 1, (4, 137, 1))], -1).astype(np.float32)
    tf = R.fit_transform((480, 640), (480, 640))
    np.testing.assert_array_equal(R.transform_keypoints(kps, tf), kps)
