"""Subject choice and identity rules, on scripted candidate lists (no detector)."""

import numpy as np
import pytest

from conftest import scripted_person
from edn_jax.errors import EdnError
from edn_jax.pose import tracking

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
    boxes = {k: tracking.person_box(v[0], 0.3) for k, v in people.items()}
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
    assert gap > 3 * cfg.max_torso_shift * tracking.person_size(a[5], 0.3)  # beyond any move the tracker allows
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
    same = tracking.colour_distance(tracking.torso_colours(red, kps, 0.3), tracking.torso_colours(red + noise, kps, 0.3))
    other = tracking.colour_distance(tracking.torso_colours(red, kps, 0.3), tracking.torso_colours(grey, kps, 0.3))
    assert same < 0.65 < other


@pytest.mark.parametrize("kwargs", [{"subject": "tallest"}, {"max_people": 0}, {"conf_threshold": 1.0},
                                    {"max_torso_shift": 0.0}, {"subject_point": (1.5, 0.5)},
                                    {"max_appearance_distance": 0.0}])
def test_bad_tracker_settings(kwargs):
    with pytest.raises(EdnError):
        tracking.TrackerConfig(**kwargs).validate()
