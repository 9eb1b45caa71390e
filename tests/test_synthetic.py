"""The synthetic subject: deterministic, anatomically sane, drawn where its keypoints are."""

import cv2
import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.synthetic import SyntheticClip, render_synthetic_frame, synthetic_clip, synthetic_keypoints

B = layout.B
H = W = 256


@pytest.fixture(scope="module")
def clip() -> SyntheticClip:
    return synthetic_clip(seed=0, num_frames=120, height=H, width=W)


@pytest.fixture(scope="module")
def kps() -> np.ndarray:
    return synthetic_keypoints(0, 120, H, W)


def _torso_len(kp: np.ndarray) -> np.ndarray:
    return np.linalg.norm(kp[..., B["Neck"], :2] - kp[..., B["MidHip"], :2], axis=-1)


def test_clip_shapes_and_types(clip):
    assert clip.frames.shape == (120, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.keypoints.shape == (120, layout.NUM_KEYPOINTS, 3) and clip.keypoints.dtype == np.float32
    assert clip.fps == 30.0


def test_deterministic(clip, kps):
    again = synthetic_clip(seed=0, num_frames=120, height=H, width=W)
    assert np.array_equal(again.frames, clip.frames)
    assert np.array_equal(again.keypoints, clip.keypoints)
    assert np.array_equal(kps, clip.keypoints)  # the cheap path gives the rendered keypoints
    # Motion is a function of time only: a shorter clip is a prefix of a longer one.
    assert np.array_equal(synthetic_keypoints(0, 30, H, W), kps[:30])


def test_frames_move(clip):
    assert np.abs(clip.frames[1:].astype(int) - clip.frames[:-1]).mean() > 0.5


def test_seeds_give_different_motions(kps):
    other = synthetic_keypoints(1, 120, H, W)
    displacement = np.linalg.norm(other[..., :2] - kps[..., :2], axis=-1).mean()
    assert displacement > 0.1 * H


@pytest.mark.parametrize("height,width", [(64, 64), (256, 256), (512, 1024), (1920, 1080)])
def test_inside_frame_and_confident(height, width):
    for seed in (0, 1, 2):
        kp = synthetic_keypoints(seed, 90, height, width)
        assert (kp[..., 2] == 1.0).all()
        assert (kp[..., 0] >= 0).all() and (kp[..., 0] <= width - 1).all()
        assert (kp[..., 1] >= 0).all() and (kp[..., 1] <= height - 1).all()
        body_height = (kp[..., 1].max(1) - kp[..., 1].min(1)) / height
        assert body_height.max() < 0.97
        if width >= height:  # portrait frames are limited by the arm span instead
            assert body_height.max() > 0.6


def test_anatomy(kps):
    x, y = kps[..., 0], kps[..., 1]
    torso = _torso_len(kps)
    # BODY_25's neck and mid-hip are the midpoints of the shoulders and of the hips.
    mid_sh = (kps[:, B["RShoulder"], :2] + kps[:, B["LShoulder"], :2]) / 2
    mid_hip = (kps[:, B["RHip"], :2] + kps[:, B["LHip"], :2]) / 2
    assert (np.linalg.norm(mid_sh - kps[:, B["Neck"], :2], axis=1) < 0.02 * torso).all()
    assert (np.linalg.norm(mid_hip - kps[:, B["MidHip"], :2], axis=1) < 0.02 * torso).all()
    for side in "RL":
        hip, knee, ankle = (y[:, B[side + j]] for j in ("Hip", "Knee", "Ankle"))
        assert (hip < knee).all() and (knee < ankle).all()
        assert (y[:, B["Neck"]] < hip).all()
        hand = kps[:, layout.LEFT_HAND if side == "L" else layout.RIGHT_HAND, :2]
        assert np.array_equal(hand[:, 0], kps[:, B[side + "Wrist"], :2])
        assert (np.linalg.norm(hand - hand[:, :1], axis=-1).max(1) < 0.5 * torso).all()
    # The subject faces the camera within +-90 degrees: their right is on the image left.
    for r, l in (("RShoulder", "LShoulder"), ("RHip", "LHip"), ("REar", "LEar")):
        assert (x[:, B[r]] < x[:, B[l]]).all()
    face = kps[:, layout.FACE, :2]
    jaw = face[:, list(layout.FACE_JAW)]
    assert (jaw[:, 0, 0] < jaw[:, -1, 0]).all()
    assert (face[:, 30] == kps[:, B["Nose"], :2]).all()
    # Face points are inside the head: near the centre between the ears, above the neck.
    head_centre = (kps[:, B["REar"], :2] + kps[:, B["LEar"], :2]) / 2
    assert (np.linalg.norm(face - head_centre[:, None], axis=-1).max(1) < 0.4 * torso).all()
    assert (face[..., 1].max(1) < y[:, B["Neck"]]).all()
    chin, brow = face[:, 8, 1], face[:, list(layout.FACE_RIGHT_BROW), 1].mean(1)
    assert (brow < chin).all()


def test_near_is_lower_and_larger(kps):
    ankle_y = kps[:, [B["RAnkle"], B["LAnkle"]], 1].max(1)
    body_height = ankle_y - kps[:, B["Nose"], 1]
    assert np.corrcoef(ankle_y, body_height)[0, 1] > 0.8
    assert np.ptp(ankle_y) > 0.1 * H
    assert body_height.max() / body_height.min() > 1.3


def test_turns_and_moves_sideways(kps):
    shoulder_w = np.linalg.norm(kps[:, B["LShoulder"], :2] - kps[:, B["RShoulder"], :2], axis=1)
    ratio = shoulder_w / _torso_len(kps)  # yaw only: torso length does not change when turning
    assert ratio.min() < 0.75 * ratio.max()
    # The face turns both ways: the nose passes from one side of the head to the other.
    offset = kps[:, B["Nose"], 0] - (kps[:, B["REar"], 0] + kps[:, B["LEar"], 0]) / 2
    assert offset.min() < -0.1 * _torso_len(kps).mean() and offset.max() > 0.1 * _torso_len(kps).mean()
    assert np.ptp(kps[:, B["MidHip"], 0]) > 0.05 * W


def test_limbs_move(kps):
    torso = _torso_len(kps)[:, None]
    rel = (kps[..., :2] - kps[:, B["Neck"], None, :2]) / torso[..., None]
    for name in ("RWrist", "LWrist", "RKnee", "LKnee"):
        assert np.ptp(rel[:, B[name]], axis=0).max() > 0.3, name
    lift = kps[:, [B["RAnkle"], B["LAnkle"]], 1].max(1) - kps[:, [B["RAnkle"], B["LAnkle"]], 1].min(1)
    assert (lift / torso[:, 0]).max() > 0.2  # one foot clearly off the floor at some point


def test_figure_is_drawn_at_its_keypoints(clip):
    background = render_synthetic_frame(layout.empty_pose(), H, W).astype(int)
    names = ("RWrist", "LWrist", "RAnkle", "LAnkle", "RHip", "LHip", "MidHip", "Neck", "Nose")
    for frame, kp in zip(clip.frames[::10].astype(int), clip.keypoints[::10]):
        for name in names:
            x, y = np.round(kp[B[name], :2]).astype(int)
            assert np.abs(frame[y, x] - background[y, x]).sum() > 30, name
        # Nothing is drawn away from the keypoints (the pad covers hair and the floor shadow).
        drawn = np.abs(frame - background).sum(-1) > 30
        x0, y0, x1, y1 = layout.bounding_box(kp)
        pad = 0.6 * _torso_len(kp)
        drawn[max(0, int(y0 - pad)):int(y1 + pad) + 1, max(0, int(x0 - pad)):int(x1 + pad) + 1] = False
        assert not drawn.any()


def test_render_scales_with_the_keypoints():
    kp = synthetic_keypoints(3, 1, 128, 128)[0]
    big = kp.copy()
    big[:, :2] *= 2
    small_mask = np.abs(render_synthetic_frame(kp, 128, 128).astype(int)
                        - render_synthetic_frame(layout.empty_pose(), 128, 128)).sum(-1) > 30
    big_mask = np.abs(render_synthetic_frame(big, 256, 256).astype(int)
                      - render_synthetic_frame(layout.empty_pose(), 256, 256)).sum(-1) > 30
    big_mask = cv2.resize(big_mask.astype(np.float32), (128, 128), interpolation=cv2.INTER_AREA) > 0.5
    iou = (small_mask & big_mask).sum() / (small_mask | big_mask).sum()
    assert iou > 0.75


def test_render_skips_missing_parts():
    kp = synthetic_keypoints(0, 1, H, W)[0]
    full = render_synthetic_frame(kp, H, W)
    no_hands = kp.copy()
    no_hands[layout.LEFT_HAND] = 0
    no_hands[layout.RIGHT_HAND] = 0
    partial = render_synthetic_frame(no_hands, H, W)
    assert 0 < np.abs(full.astype(int) - partial).sum(-1).astype(bool).sum() < 0.05 * H * W


def test_appearance_changes_clothes_not_pose():
    a = synthetic_clip(seed=0, num_frames=2, height=64, width=64, appearance=0)
    b = synthetic_clip(seed=0, num_frames=2, height=64, width=64, appearance=1)
    assert np.array_equal(a.keypoints, b.keypoints)
    assert not np.array_equal(a.frames, b.frames)
    # The shirt between the neck and the mid-hip changes colour.
    x, y = np.round((a.keypoints[0, B["Neck"], :2] + a.keypoints[0, B["MidHip"], :2]) / 2).astype(int)
    assert np.abs(a.frames[0, y, x].astype(int) - b.frames[0, y, x]).sum() > 60


@pytest.mark.parametrize("kwargs,value", [
    (dict(num_frames=0), "0"), (dict(height=16), "16"), (dict(width=8), "8"), (dict(fps=0.0), "0.0"),
    (dict(seed=-1), "-1"), (dict(appearance=99), "99"),
])
def test_bad_arguments(kwargs, value):
    with pytest.raises(EdnError) as err:
        synthetic_clip(**{**dict(num_frames=2, height=64, width=64), **kwargs})
    message = str(err.value)
    assert "\n" not in message and value in message and next(iter(kwargs)) in message


def test_bad_render_arguments():
    with pytest.raises(EdnError, match="shape"):
        render_synthetic_frame(np.zeros((25, 3)), 64, 64)
    with pytest.raises(EdnError, match="height"):
        render_synthetic_frame(layout.empty_pose(), 10, 64)
