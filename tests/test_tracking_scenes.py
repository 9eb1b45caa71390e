"""The subject tracker with MediaPipe on scripted multi-person synthetic scenes (known identities).

Each scene is one of the situations that broke the old tracker on real footage: a subject
displaced far between two frames, one who leaves for 40 frames while someone else crosses and
comes back elsewhere, two people crossing, a second person coming to stand just behind the
subject, and a subject who somersaults across the frame and lands crouched in the shade while
someone else walks past (the tracker before the tone rule followed it in 39% of its frames).
Every tracked skeleton is compared with every person's exact keypoints.
"""

import numpy as np
import pytest

from edn_jax.pose import detector, layout, tracking, video_tracker
from edn_jax.synthetic import scenes


@pytest.fixture(scope="module")
def tracked_scenes():
    cache = {}

    def get(name, detectors=1):
        if (name, detectors) not in cache:
            scene = scenes.scene(name)
            cfg = tracking.TrackerConfig(subject="point", subject_point=scene.subject_point)
            dets = [detector.MediaPipeHolisticDetector() for _ in range(detectors)]
            try:
                kps, stats = video_tracker.track_video(dets if detectors > 1 else dets[0], scene.frames(), cfg)
            finally:
                for d in dets:
                    d.close()
            cache[name, detectors] = scene, kps, stats
        return cache[name, detectors]

    return get


@pytest.mark.parametrize("name", sorted(scenes.SCENES))
def test_subject_followed_without_swaps(tracked_scenes, name):
    scene, kps, stats = tracked_scenes(name)
    score = scenes.score_track(scene, kps)
    assert score.swaps == [], (name, score, stats.status)
    assert score.coverage >= 0.95, (name, score, stats.status)
    assert len(stats.status) == scene.num_frames
    # Where the subject's arm lies on the person behind it, MediaPipe can put the wrist and hand on
    # theirs, skin on skin, with no colour to tell: 6 to 8 of the 90 frames of "behind" before the
    # tracker dropped a hand that sits on the overlapping person's, 3 since (on frames where the
    # detection with the subject's torso masked finds the subject again, not the person behind).
    assert len(score.hand_mixes) <= 0.06 * scene.num_frames, score


def test_subject_displaced_far_is_found_by_identity(tracked_scenes):
    scene, kps, stats = tracked_scenes("jump")
    half = scene.num_frames // 2
    assert stats.status[half] == "tracked"  # the very frame it lands far away
    assert stats.reacquired >= 1


def test_leaving_subject_comes_back_and_the_reasons_say_why_it_was_missing(tracked_scenes):
    scene, kps, stats = tracked_scenes("leave_and_return")
    status = np.array(stats.status)
    def inside(p, t):  # fraction of the person's body points inside the frame
        xy = scene.keypoints[p, t, layout.BODY]
        return ((xy[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < scene.width)).mean()

    nobody = [t for t in range(scene.num_frames) if inside(0, t) == 0 and inside(1, t) == 0]
    only_other = [t for t in range(scene.num_frames) if inside(0, t) == 0 and inside(1, t) > 0.5]
    assert len(nobody) >= 5 and len(only_other) >= 20
    assert (status[nobody] == "not_detected").all(), list(zip(nobody, status[nobody]))
    assert (status[only_other] == "other_person").mean() >= 0.9, status[only_other]
    assert status[-20:].tolist() == ["tracked"] * 20  # back, on the other side of the frame


def test_subject_flipping_into_the_shade_is_followed_and_every_miss_is_explained(tracked_scenes):
    scene, kps, stats = tracked_scenes("flip_in_shade")
    status = np.array(stats.status)
    in_shade = [t for t in range(64, scene.num_frames) if scene.subject_visible(t)]  # landed, crouched, then up
    walker_by = [t for t in in_shade if scene.present(1, t) and 0 < scene.keypoints[1, t, layout.B["MidHip"], 0] < scene.width]
    assert len(in_shade) > 80 and len(walker_by) > 30
    assert (status[in_shade] == "tracked").mean() >= 0.95, [(t, stats.reasons[t]) for t in in_shade if status[t] != "tracked"]
    assert (status[walker_by] == "tracked").mean() >= 0.9
    assert len(stats.reasons) == scene.num_frames
    for t, (s, why) in enumerate(zip(stats.status, stats.reasons)):
        assert (why == "") == (s == "tracked"), (t, s, why)
        if s == "other_person":  # who was found, where, and the verdict
            assert "found, none the subject" in why and "person at x" in why, (t, why)


def test_several_detectors_follow_the_same_scene(tracked_scenes):
    scene, kps, stats = tracked_scenes("leave_and_return", detectors=2)
    score = scenes.score_track(scene, kps)
    assert score.swaps == [] and score.coverage >= 0.95, (score, stats.status)


def test_the_scene_score_sees_a_swap_and_a_missed_subject():
    scene = scenes.scene("crossing")
    exact = scenes.score_track(scene, scene.keypoints[0])
    assert exact.coverage == 1.0 and exact.swaps == [] and exact.hand_mixes == []
    swapped = scene.keypoints[0].copy()
    swapped[40:] = scene.keypoints[1, 40:]  # the other person from frame 40 on
    score = scenes.score_track(scene, swapped)
    assert [t for t, _ in score.swaps if _ == 1] == list(range(40, scene.num_frames))
    empty = np.zeros_like(swapped)
    assert scenes.score_track(scene, empty).coverage == 0.0
    visible = [t for t in range(scene.num_frames) if scene.subject_visible(t)]
    hidden = [t for t in range(scene.num_frames) if not scene.subject_visible(t)]
    assert hidden and len(visible) > 40  # the other passes in front of the subject for a few frames
