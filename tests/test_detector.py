"""MediaPipe -> canonical mapping, and detection on real footage."""

import numpy as np
import pytest

from edn_jax.pose import detector, layout

B = layout.B
W, H = 200, 100


def _fake_landmarks(seed=0):
    rng = np.random.default_rng(seed)
    pose = np.concatenate([rng.uniform(0.1, 0.9, (33, 2)), rng.uniform(0.5, 1.0, (33, 1))], 1).astype(np.float32)
    face = rng.uniform(0.3, 0.6, (478, 3)).astype(np.float32)
    left, right = rng.uniform(0, 1, (21, 3)).astype(np.float32), rng.uniform(0, 1, (21, 3)).astype(np.float32)
    return pose, face, left, right


def test_body_mapping_and_derived_points():
    pose, face, left, right = _fake_landmarks()
    kps = detector.mediapipe_to_canonical(pose, face, left, right, W, H)
    scale = np.array([W, H])
    np.testing.assert_allclose(kps[B["RWrist"], :2], pose[16, :2] * scale, rtol=1e-6)
    np.testing.assert_allclose(kps[B["LAnkle"], :2], pose[27, :2] * scale, rtol=1e-6)
    assert kps[B["LAnkle"], 2] == pose[27, 2]
    np.testing.assert_allclose(kps[B["Neck"], :2], (pose[11, :2] + pose[12, :2]) / 2 * scale, rtol=1e-6)
    np.testing.assert_allclose(kps[B["MidHip"], :2], (pose[23, :2] + pose[24, :2]) / 2 * scale, rtol=1e-6)
    assert kps[B["Neck"], 2] == min(pose[11, 2], pose[12, 2])
    # Small toe on the heel -> big toe line, most of the way to the big toe.
    heel, toe, small = kps[B["RHeel"], :2], kps[B["RBigToe"], :2], kps[B["RSmallToe"], :2]
    t = np.dot(small - heel, toe - heel) / np.dot(toe - heel, toe - heel)
    assert 0.5 < t < 1.0
    np.testing.assert_allclose(small, heel + t * (toe - heel), atol=1e-3)


def test_face_and_hands_mapping():
    pose, face, left, right = _fake_landmarks(1)
    kps = detector.mediapipe_to_canonical(pose, face, left, right, W, H)
    scale = np.array([W, H])
    np.testing.assert_allclose(kps[layout.LEFT_HAND, :2], left[:, :2] * scale, rtol=1e-6)
    np.testing.assert_allclose(kps[layout.RIGHT_HAND, :2], right[:, :2] * scale, rtol=1e-6)
    f = kps[layout.FACE]
    assert (f[:, 2] == 1.0).all()
    np.testing.assert_allclose(f[8, :2], face[152, :2] * scale, rtol=1e-6)      # chin
    np.testing.assert_allclose(f[30, :2], face[4, :2] * scale, rtol=1e-6)       # nose tip
    np.testing.assert_allclose(f[68, :2], face[468, :2] * scale, rtol=1e-6)     # right pupil = iris centre
    np.testing.assert_allclose(f[69, :2], face[473, :2] * scale, rtol=1e-6)
    # All 68 contour points come from distinct mesh vertices.
    assert len(set(detector._MESH_TO_IBUG68)) == 68
    # Without irises the pupils are the eye contours' centres.
    kps468 = detector.mediapipe_to_canonical(pose, face[:468], None, None, W, H)
    np.testing.assert_allclose(kps468[layout.FACE][68, :2], kps468[layout.FACE][36:42, :2].mean(0), rtol=1e-6)
    assert (kps468[layout.LEFT_HAND] == 0).all() and (kps468[layout.RIGHT_HAND] == 0).all()


def test_missing_body_and_low_visibility():
    pose, face, left, right = _fake_landmarks(2)
    assert detector.mediapipe_to_canonical(None, face, left, right, W, H) is None
    pose[28, 2] = 0.1  # right ankle barely visible
    kps = detector.mediapipe_to_canonical(pose, None, None, None, W, H, min_visibility=0.3)
    assert (kps[B["RAnkle"]] == 0).all()
    assert kps[B["LAnkle"], 2] > 0.3
    assert (kps[layout.FACE] == 0).all()


def test_mesh_jaw_is_left_right_symmetric_in_index_pairs():
    # The jaw runs from the subject's right (mesh 127/234 side) to the left (356/454 side).
    jaw = detector._MESH_TO_IBUG68[:17]
    assert jaw[0] == 127 and jaw[-1] == 356 and jaw[8] == 152


def test_real_video_body_found_in_at_least_98_frames(tracked_real):
    kps, stats = tracked_real("single_person_cam01.mp4")
    found = (kps[:, layout.BODY, 2] > 0).any(1)
    assert found.sum() >= 98, stats
    # The subject is the man on the treadmill: a whole body, standing (ankles below hips below shoulders).
    body = kps[found]
    assert (body[:, B["RAnkle"], 1] > body[:, B["RHip"], 1]).mean() > 0.95
    assert (body[:, B["RHip"], 1] > body[:, B["RShoulder"], 1]).all()
    height = body[:, B["RAnkle"], 1] - body[:, B["Nose"], 1]
    assert np.median(height) > 500  # pixels of a 1920-high frame: not the small bystander


@pytest.mark.parametrize("subject", ["largest", "central"])
def test_two_people_no_identity_swap(tracked_real, subject):
    from edn_jax.pose import appearance, tracking

    kps, stats = tracked_real("two_people_cam01.mp4", subject)
    idx = [t for t in range(len(kps)) if (kps[t, layout.BODY, 2] > 0).any()]
    assert len(idx) >= 90, stats
    centres = np.array([tracking.torso_centre(kps[t], 0.3) for t in idx])
    sizes = np.array([appearance.person_size(kps[t], 0.3) for t in idx])
    # Between consecutive tracked frames, also across gaps, the torso never jumps to the other
    # person: the two torsos stay more than half a size apart (measured: 0.58 at their closest),
    # while MediaPipe's torso moves up to 0.15 of a size on the man when the woman hides his legs.
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / sizes[:-1]
    assert steps.max() < 0.3, (subject, steps.max())


def test_two_people_policies_follow_different_people_throughout(tracked_real):
    """'largest' follows the woman in front, 'central' the man behind: never the same person."""
    from edn_jax.pose import appearance, tracking

    woman, _ = tracked_real("two_people_cam01.mp4", "largest")
    man, _ = tracked_real("two_people_cam01.mp4", "central")
    for t in range(len(woman)):
        if (woman[t, :, 2] > 0).any() and (man[t, :, 2] > 0).any():
            gap = np.linalg.norm(tracking.torso_centre(woman[t], 0.3) - tracking.torso_centre(man[t], 0.3))
            assert gap > 0.25 * appearance.person_size(man[t], 0.3), t
    # The woman walks in front, lower in the frame; the man stays on the treadmill.
    assert np.median(woman[:, layout.B["MidHip"], 1]) > np.median(man[man[:, 8, 2] > 0, layout.B["MidHip"], 1]) + 200


def test_detector_recovers_the_synthetic_subjects_exact_keypoints():
    """MediaPipe on the cartoon subject lands on its exact keypoints, point by point.

    This checks the whole mapping: a swapped left/right, a mis-ordered face contour or a hand in
    the wrong block would put points tens of pixels from their exact positions.
    """
    from edn_jax import synthetic

    clip = synthetic.synthetic_clip(seed=0, num_frames=16, height=512, width=512)
    with detector.MediaPipeHolisticDetector() as det:
        found = [det.detect(frame) for frame in clip.frames]
    assert all(f is not None for f in found)
    got, exact = np.stack(found), clip.keypoints
    for part, tolerance in (("body", 12.0), ("face", 4.0)):
        sl = layout.PARTS[part]
        seen = (got[:, sl, 2] > 0.3) & (exact[:, sl, 2] > 0)
        err = np.linalg.norm(got[:, sl, :2] - exact[:, sl, :2], axis=-1)
        per_point = np.array([np.median(err[:, i][seen[:, i]]) for i in range(err.shape[1]) if seen[:, i].sum() >= 8])
        assert len(per_point) >= 0.8 * err.shape[1], part
        assert np.median(per_point) < tolerance / 2 and per_point.max() < 3 * tolerance, (part, per_point.max())
    hands = got[:, layout.LEFT_HAND, 2].max(1) > 0
    assert hands.sum() >= 8
    assert np.median(np.linalg.norm(got[hands][:, layout.LEFT_HAND, :2] - exact[hands][:, layout.LEFT_HAND, :2], axis=-1)) < 12


def test_reset_forgets_the_hand_and_face_regions_of_earlier_calls():
    """Static mode re-detects the body every call, but Holistic's hand/face subgraphs reuse the previous
    call's regions; ``reset`` makes a used detector answer exactly like a new one (the threaded
    tracker relies on it for repeatable results)."""
    from helpers import real_video
    from edn_jax.runtime import video

    crops = [np.ascontiguousarray(f[200:1800, 100:1000]) for f in video.iter_frames(real_video("single_person_cam01.mp4"), 4)]
    with detector.MediaPipeHolisticDetector() as det:
        fresh = [det.detect(c) for c in crops]
        for c in crops[::-1]:
            det.detect(c)
        det.reset()
        again = [det.detect(c) for c in crops]
    assert all(f is not None and np.array_equal(f, a) for f, a in zip(fresh, again))


class _UprightOnly:
    """MediaPipe, answering only when the person it finds stands upright (nose above the ankles): a
    detector that fails on people upside down, as real detectors do on flips."""

    def __init__(self, det):
        self.det = det

    def detect(self, frame):
        kps = self.det.detect(frame)
        if kps is None:
            return None
        nose, ankles = kps[layout.B["Nose"], 1], kps[[layout.B["RAnkle"], layout.B["LAnkle"]], 1].mean()
        return kps if nose < ankles else None


@pytest.mark.parametrize("rotated_tries", [True, False])
def test_a_subject_upside_down_is_found_on_the_turned_window(rotated_tries):
    from edn_jax import synthetic
    from edn_jax.pose import tracking, video_tracker

    size = 320
    clip = synthetic.synthetic_clip(seed=0, num_frames=12, height=size, width=size)
    flipped = range(5, 9)
    frames, exact = [], clip.keypoints.copy()
    for t, frame in enumerate(clip.frames):
        if t in flipped:  # the whole frame turned over: the subject stands on its head in the same place
            frame = np.ascontiguousarray(frame[::-1, ::-1])
            exact[t, :, :2] = size - exact[t, :, :2]
        frames.append(frame)
    with detector.MediaPipeHolisticDetector() as det:
        kps, stats = video_tracker.track_video(_UprightOnly(det), frames, tracking.TrackerConfig(rotated_tries=rotated_tries))
    found = kps[:, layout.BODY, 2].max(1) > 0
    if not rotated_tries:
        assert found.tolist() == [t not in flipped for t in range(12)]
        return
    assert found.all() and stats.rotated == len(flipped), stats
    err = np.linalg.norm(kps[list(flipped)][:, layout.BODY, :2] - exact[list(flipped)][:, layout.BODY, :2], axis=-1)
    seen = kps[list(flipped)][:, layout.BODY, 2] > 0.3
    assert np.median(err[seen]) < 8  # pixels: the points map back onto the upside-down subject
