"""Subject choice, identity rules, appearance and prediction, on scripted people (no detector)."""

import numpy as np
import pytest

from helpers import scripted_person
from edn_jax.errors import EdnError
from edn_jax.pose import appearance, layout, tracking

H, W = 200, 400


def _person(seed, frames, scale=1.0, dx=0.0, dy=0.0):
    return scripted_person(seed, frames, H, W, scale, dx, dy)


def _labels(chosen, people):
    out = []
    for t, c in enumerate(chosen):
        hits = [name for name, p in people.items() if c is not None and np.array_equal(c, p[t])]
        out.append(hits[0] if hits else None)
    return out


@pytest.mark.parametrize("policy,point,expected", [
    ("largest", (0.5, 0.5), "big"),
    ("central", (0.5, 0.5), "small"),
    ("point", (0.05, 0.5), "big"),
])
def test_subject_policies(policy, point, expected):
    people = {"big": _person(1, 3, 0.6, -60, 40), "small": _person(2, 3, 0.35, 130, 90)}
    cfg = tracking.TrackerConfig(subject=policy, subject_point=point)
    boxes = {k: appearance.person_box(v[0], 0.3) for k, v in people.items()}
    assert boxes["big"][0] < boxes["small"][0]
    chosen = list(tracking.track_candidates([[people["big"][t], people["small"][t]] for t in range(3)], H, W, cfg))
    assert _labels(chosen, people) == [expected] * 3


def test_subject_kept_when_a_person_crosses_in_front():
    a = _person(1, 20)
    b = _person(2, 20, 0.5, 200, 50)  # smaller person whose torso the subject walks over
    frames = [[a[t], b[t]] if t % 2 else [b[t], a[t]] for t in range(20)]
    chosen = list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig()))
    assert _labels(chosen, {"a": a, "b": b}) == ["a"] * 20


def test_other_person_in_the_subjects_place_is_refused():
    """The subject leaves; a different person then stands far from where it was: frames stay missing."""
    a = _person(1, 12)
    b = _person(2, 12, 1.0, 200, 0)
    gap = np.linalg.norm(tracking.torso_centre(b[6], 0.3) - tracking.torso_centre(a[5], 0.3))
    cfg = tracking.TrackerConfig()
    assert gap > 3 * cfg.max_torso_shift * appearance.person_size(a[5], 0.3)  # beyond any move the tracker allows
    frames = [[a[t]] for t in range(6)] + [[b[t]] for t in range(6, 12)]
    chosen = list(tracking.track_candidates(frames, H, W, cfg))
    assert _labels(chosen, {"a": a, "b": b}) == ["a"] * 6 + [None] * 6


def test_subject_picked_up_again_after_a_short_gap():
    a = _person(1, 12)
    frames = [[a[t]] if not 4 <= t < 7 else [] for t in range(12)]
    chosen = list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig()))
    assert _labels(chosen, {"a": a}) == ["a"] * 4 + [None] * 3 + ["a"] * 5


def test_pose_distance_separates_people_with_overlapping_torsos():
    a, b = _person(1, 1)[0], _person(2, 1, 0.5, 200, 50)[0]
    assert tracking.pose_distance(a, a, 0.3) == 0.0
    assert tracking.pose_distance(a, b, 0.3) > 0.2


def test_torso_colours_tell_two_shirts_apart():
    kps = _person(1, 1)[0]
    red, grey = np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.uint8)
    red[...] = (200, 30, 30)
    grey[...] = (120, 120, 125)
    noise = np.random.default_rng(0).integers(0, 12, (H, W, 3)).astype(np.uint8)
    same = appearance.colour_distance(appearance.torso_colours(red, kps, 0.3), appearance.torso_colours(red + noise, kps, 0.3))
    other = appearance.colour_distance(appearance.torso_colours(red, kps, 0.3), appearance.torso_colours(grey, kps, 0.3))
    assert same < 0.65 < other


@pytest.mark.parametrize("kwargs", [{"subject": "tallest"}, {"max_people": 0}, {"conf_threshold": 1.0},
                                    {"max_torso_shift": 0.0}, {"subject_point": (1.5, 0.5)},
                                    {"max_appearance_distance": 0.0}, {"scan_every": -1}, {"scan_every": 1.5}])
def test_bad_tracker_settings(kwargs):
    with pytest.raises(EdnError):
        tracking.TrackerConfig(**kwargs).validate()



# --- one person per skeleton, appearance, prediction ------------------------------------------------

def test_a_face_or_hand_from_another_person_is_dropped_and_the_body_kept():
    a, b = _person(1, 1)[0], _person(2, 1, 1.0, 150, 0)[0]
    kept, dropped = appearance.split_parts(a, 0.3)
    assert dropped == () and kept is a
    mixed = a.copy()
    mixed[layout.FACE] = b[layout.FACE]
    mixed[layout.LEFT_HAND] = b[layout.LEFT_HAND]
    kept, dropped = appearance.split_parts(mixed, 0.3)
    assert dropped == ("face", "left_hand")
    assert (kept[layout.FACE, 2] == 0).all() and (kept[layout.LEFT_HAND, 2] == 0).all()
    np.testing.assert_array_equal(kept[layout.BODY], a[layout.BODY])
    np.testing.assert_array_equal(kept[layout.RIGHT_HAND], a[layout.RIGHT_HAND])


def _two_people_frame():
    """A frame with the subject (clothes 0) left and another person (clothes 2) right, and their keypoints."""
    from edn_jax.synthetic.painter import render_synthetic_scene

    a, b = _person(1, 1, 0.9, -60, 10)[0], _person(2, 1, 0.9, 110, 10)[0]
    return render_synthetic_scene([(a, 0), (b, 2)], H, W), a, b


def test_clothes_by_region_tell_people_apart_and_find_a_skeleton_with_another_persons_legs():
    frame, a, b = _two_people_frame()
    look_a, look_b = appearance.describe(frame, a, 0.3), appearance.describe(frame, b, 0.3)
    assert {"torso", "r_thigh", "l_shin"} <= set(look_a.colours)
    assert appearance.distance(look_a, look_a) == pytest.approx(0.0, abs=1e-6)
    assert appearance.distance(look_a, look_b) > 0.65  # the tracker's default threshold
    legs = [layout.B[n] for n in ("RHip", "LHip", "MidHip", "RKnee", "LKnee", "RAnkle", "LAnkle")]
    mixed = a.copy()
    mixed[legs[3:]] = b[legs[3:]]  # the knees and ankles on the other person, the hips on the subject
    mixed[[layout.B["RHip"], layout.B["LHip"]], 0] += b[layout.B["MidHip"], 0] - a[layout.B["MidHip"], 0]
    flagged = appearance.regions_of_other(look_a, look_b, appearance.describe(frame, mixed, 0.3))
    assert {"r_thigh", "l_thigh", "r_shin", "l_shin"} & set(flagged)
    assert "torso" not in flagged
    assert appearance.regions_of_other(look_a, look_b, look_a) == []


def test_tones_match_a_person_in_the_shade_where_the_clothes_histograms_do_not():
    """The same clothes in the shade (darker, bluer and duller: scenes.SHADE): the hue-saturation
    histograms move bins, the tones relative to the person's own mean stay close; another person's
    differ. A light that only scales the channels cancels out."""
    from edn_jax.synthetic.painter import render_synthetic_scene
    from edn_jax.synthetic.scenes import SHADE

    frame, a, b = _two_people_frame()
    sun_a, look_b = appearance.describe(frame, a, 0.3), appearance.describe(frame, b, 0.3)
    scaled = render_synthetic_scene([(a, 0), (b, 2)], H, W, [np.array([SHADE[0], (0, 0, 0)]), None])
    shade = render_synthetic_scene([(a, 0), (b, 2)], H, W, [np.array(SHADE), None])
    scaled_a, shade_a = appearance.describe(scaled, a, 0.3), appearance.describe(shade, a, 0.3)
    assert set(sun_a.tones) == set(sun_a.colours)
    assert appearance.distance(sun_a, shade_a) > 0.65             # the histograms refuse him
    assert appearance.relative_distance(sun_a, shade_a) < tracking.TONE_MATCH  # the tones do not
    assert appearance.relative_distance(sun_a, scaled_a) < 0.15  # (not 0: TONE_FLOOR keeps dark regions steady)
    assert appearance.relative_distance(sun_a, look_b) > tracking.TONE_MATCH
    assert appearance.relative_distance(shade_a, look_b) > tracking.TONE_MATCH
    assert appearance.relative_distance(sun_a, sun_a) == pytest.approx(0.0, abs=1e-6)
    few = ("torso", "l_upper_arm")  # weight 2.5: relative to so few regions, different clothes can look alike
    part = appearance.Appearance({r: sun_a.colours[r] for r in few}, sun_a.size, {r: sun_a.tones[r] for r in few})
    assert appearance.relative_distance(part, shade_a) is None
    blended = sun_a.blend(shade_a, 0.5)
    np.testing.assert_allclose(blended.tones["torso"], (sun_a.tones["torso"] + shade_a.tones["torso"]) / 2)


def test_a_subject_speeding_up_is_followed_by_its_velocity(monkeypatch):
    """Moving up to 0.4 of its size per frame, far beyond the 0.15 a standing prediction allows."""
    n = 14
    a = _person(1, n, 0.5, -150, 40)
    size = appearance.person_size(a[0], 0.3)
    shift = np.cumsum(np.linspace(0.05, 0.4, n)) * size
    moving = a.copy()
    moving[:, :, 0] = np.where(a[..., 2] > 0, a[..., 0] + shift[:, None], 0)
    frames = [[moving[t]] for t in range(n)]
    chosen = list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig()))
    assert all(c is not None for c in chosen)
    # The same rules judging against a standing subject lose it once it is fast.
    monkeypatch.setattr(tracking.Person, "velocity", lambda self: np.zeros(2, np.float32))
    standing = list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig()))
    assert standing[-1] is None


def test_a_subject_lost_mid_jump_is_found_where_its_velocity_lands_it(monkeypatch):
    """Moving 0.3 of its size per frame, then unseen for 4 frames (a flip), then landed 1.5 sizes on:
    beyond the 3 frames of velocity the prediction carries, on the line its last velocity draws."""
    n = 16
    a = _person(1, n, 0.4, -160, 40)
    size = appearance.person_size(a[0], 0.3)
    moving = a.copy()
    step = np.minimum(0.1 + 0.05 * np.arange(n - 1), 0.3)  # speeding up to 0.3 per frame, landing at frame 10
    step[10:] = 0.05
    x = np.concatenate([[0.0], np.cumsum(step)]) * size
    moving[:, :, 0] = np.where(a[..., 2] > 0, a[..., 0] + x[:, None], 0)
    frames = [[] if 6 <= t < 10 else [moving[t]] for t in range(n)]
    chosen = list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig()))
    assert [c is not None for c in chosen] == [True] * 6 + [False] * 4 + [True] * 6
    # Without carrying the velocity to the landing, the same frames are refused as too far.
    monkeypatch.setattr(tracking, "LANDING_FRAMES", 0)
    stats = tracking.TrackStats()
    refused = list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig(), stats))
    assert refused[10] is None and "far" in stats.reasons[10]


def test_statuses_say_why_the_subject_is_missing():
    a = _person(1, 9)
    b = _person(2, 9, 1.0, 200, 0)
    frames = [[a[t]] for t in range(3)] + [[] for _ in range(3)] + [[b[t]] for t in range(6, 9)]
    stats = tracking.TrackStats()
    list(tracking.track_candidates(frames, H, W, tracking.TrackerConfig(), stats))
    assert stats.status == ["tracked"] * 3 + ["not_detected"] * 3 + ["other_person"] * 3
    assert stats.status_counts() == {"tracked": 3, "not_detected": 3, "other_person": 3}


@pytest.mark.parametrize("shared", [True, False])
def test_a_hand_on_the_overlapping_persons_hand_is_dropped(monkeypatch, shared):
    """Behind the subject, another person's bare hand can be given to the subject with its wrist (no
    clothes colour to tell); a detection with the subject's torso masked finds that person, and a
    subject hand on that person's hand is dropped. A hand of its own elsewhere is kept."""
    from edn_jax.pose import people
    from edn_jax.synthetic.painter import render_synthetic_scene

    subject, other = _person(1, 2, 0.9, 60, 10), _person(2, 2, 0.9, 110, -25)  # boxes overlap by a third
    frame = render_synthetic_scene([(other[0], 2), (subject[0], 0)], H, W)
    mixed = subject[1].copy()
    hand, wrist = layout.LEFT_HAND, layout.B["LWrist"]
    if shared:  # the subject's left wrist and hand on the other person's
        mixed[hand], mixed[wrist] = other[1][hand], other[1][wrist]
    masks = []

    def in_window(detector, image, window, mask=None, keep=None):
        masks.append(mask)
        return mixed.copy() if mask is None else other[1].copy()  # masked: the person behind is found

    monkeypatch.setattr(people, "detect_people", lambda det, image, n, th, exclude=None: (
        [subject[0], other[0]] if not masks else []))
    monkeypatch.setattr(people, "detect_in_window", in_window)
    tracker = tracking.SubjectTracker(object(), tracking.TrackerConfig(subject="point", subject_point=(0.6, 0.5)))
    np.testing.assert_array_equal(tracker.update(frame), subject[0])
    masks.append(None)  # from now on detect_people finds nobody more
    kps = tracker.update(frame)
    np.testing.assert_array_equal(kps[layout.BODY], mixed[layout.BODY])
    np.testing.assert_array_equal(kps[layout.RIGHT_HAND], mixed[layout.RIGHT_HAND])
    masked = [m for m in masks if m is not None]
    assert masked, "no second detection beside the overlapping person"
    torso = subject[1][list(tracking.TORSO)]
    np.testing.assert_allclose(masked[-1], [*torso[:, :2].min(0), *torso[:, :2].max(0)], atol=1e-4)
    if shared:
        assert (kps[hand, 2] == 0).all() and tracker.stats.parts_dropped == 1
    else:
        np.testing.assert_array_equal(kps[hand], mixed[hand])
