import json

import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.pose import openpose_json as oj


def random_pose(rng, missing_fraction=0.3):
    pose = np.empty((layout.NUM_KEYPOINTS, 3), np.float32)
    pose[:, 0] = rng.uniform(0, 1920, layout.NUM_KEYPOINTS)
    pose[:, 1] = rng.uniform(0, 1080, layout.NUM_KEYPOINTS)
    pose[:, 2] = rng.uniform(0.01, 1.0, layout.NUM_KEYPOINTS)
    pose[rng.random(layout.NUM_KEYPOINTS) < missing_fraction] = 0.0
    return pose


def test_dict_round_trip_is_bit_exact():
    rng = np.random.default_rng(0)
    people = [random_pose(rng) for _ in range(3)]
    text = json.dumps(oj.people_to_json_dict(people))
    back = oj.json_dict_to_people(json.loads(text))
    assert len(back) == 3
    for a, b in zip(people, back):
        assert b.dtype == np.float32 and b.shape == (137, 3)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_written_dict_has_openpose_fields():
    d = oj.people_to_json_dict([layout.empty_pose()])
    person = d["people"][0]
    assert d["version"] == 1.3 and person["person_id"] == [-1]
    assert [len(person[f]) for f in oj.FIELDS] == [75, 210, 63, 63]
    assert person["pose_keypoints_3d"] == [] and person["hand_right_keypoints_3d"] == []


def test_sequence_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(1)
    seq = np.stack([random_pose(rng) for _ in range(7)])
    seq[3] = 0.0  # nobody detected in this frame
    oj.write_sequence(tmp_path, seq)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"frame_{t:012d}_keypoints.json" for t in range(7)]  # no temp files left
    assert json.loads((tmp_path / names[3]).read_text())["people"] == []
    assert len(json.loads((tmp_path / names[2]).read_text())["people"]) == 1
    back = oj.read_sequence(tmp_path)
    assert back.dtype == np.float32
    assert np.array_equal(back.view(np.uint32), seq.view(np.uint32))


def test_rewriting_a_shorter_sequence_removes_stale_frames(tmp_path):
    rng = np.random.default_rng(2)
    oj.write_sequence(tmp_path, np.stack([random_pose(rng) for _ in range(5)]))
    short = np.stack([random_pose(rng) for _ in range(2)])
    oj.write_sequence(tmp_path, short)
    assert np.array_equal(oj.read_sequence(tmp_path), short)


def test_multi_person_frames(tmp_path):
    rng = np.random.default_rng(3)
    a, b, c = (random_pose(rng, 0.0) for _ in range(3))
    oj.write_frame_json(tmp_path / "clip_000000000000_keypoints.json", [a, b])
    oj.write_frame_json(tmp_path / "clip_000000000001_keypoints.json", [c])
    oj.write_frame_json(tmp_path / "clip_000000000002_keypoints.json", [])

    people = oj.read_sequence_people(tmp_path)
    assert [len(p) for p in people] == [2, 1, 0]
    assert np.array_equal(people[0][1], b)

    first = oj.read_sequence(tmp_path)
    assert np.array_equal(first, np.stack([a, c, layout.empty_pose()]))
    second = oj.read_sequence(tmp_path, person=1)
    assert np.array_equal(second, np.stack([b, layout.empty_pose(), layout.empty_pose()]))

    rightmost = oj.read_sequence(
        tmp_path, person=lambda ps: max(ps, key=lambda p: p[1, 0]) if ps else None)
    assert np.array_equal(rightmost[0], max(a, b, key=lambda p: p[1, 0]))
    assert np.array_equal(rightmost[2], layout.empty_pose())


def test_frames_are_ordered_by_number_not_name(tmp_path):
    # Unpadded numbers: lexical order would be 1, 10, 2.
    for t in (2, 10, 1):
        pose = layout.empty_pose()
        pose[0] = (t, t, 1.0)
        oj.write_frame_json(tmp_path / f"run_{t}_keypoints.json", [pose])
    seq = oj.read_sequence(tmp_path)
    assert seq[:, 0, 0].tolist() == [1.0, 2.0, 10.0]


def test_empty_face_and_hand_lists_become_missing_points():
    pose = [float(v) for v in range(1, 76)]
    d = {"version": 1.3, "people": [{
        "person_id": [-1], "pose_keypoints_2d": pose, "face_keypoints_2d": [],
        "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
        "pose_keypoints_3d": [], "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}]}
    (person,) = oj.json_dict_to_people(d)
    assert np.array_equal(person[layout.BODY].ravel(), np.arange(1, 76, dtype=np.float32))
    assert not person[layout.BODY.stop:].any()

    del d["people"][0]["face_keypoints_2d"]  # older OpenPose omits unused parts
    assert np.array_equal(oj.json_dict_to_people(d)[0], person)


def test_confidence_zero_points_get_zero_coordinates():
    values = [0.0] * 75
    values[0:3] = [300.5, 200.25, 0.0]  # some tools keep coordinates of missing points
    (person,) = oj.json_dict_to_people({"people": [{"pose_keypoints_2d": values}]})
    assert not person.any()


def test_hand_written_openpose_file_maps_to_canonical_rows(tmp_path):
    # One BODY_25 person as OpenPose 1.7 writes it (pixels of a 1920x1080 frame).
    pose = [
        958.1, 212.4, 0.91,   # 0 Nose
        960.3, 318.7, 0.88,   # 1 Neck
        871.6, 321.2, 0.82,   # 2 RShoulder
        829.9, 445.0, 0.79,   # 3 RElbow
        801.2, 560.8, 0.74,   # 4 RWrist
        1049.5, 316.1, 0.85,  # 5 LShoulder
        1093.0, 439.7, 0.80,  # 6 LElbow
        1118.4, 552.3, 0.77,  # 7 LWrist
        958.8, 602.5, 0.71,   # 8 MidHip
        905.3, 603.9, 0.69,   # 9 RHip
        898.7, 781.2, 0.75,   # 10 RKnee
        894.1, 950.6, 0.72,   # 11 RAnkle
        1012.6, 601.0, 0.68,  # 12 LHip
        1020.9, 779.4, 0.76,  # 13 LKnee
        1027.3, 948.8, 0.70,  # 14 LAnkle
        943.0, 196.5, 0.90,   # 15 REye
        972.8, 196.1, 0.92,   # 16 LEye
        922.4, 207.9, 0.63,   # 17 REar
        0.0, 0.0, 0.0,        # 18 LEar (not detected)
        1045.2, 990.3, 0.55,  # 19 LBigToe
        1058.7, 985.0, 0.51,  # 20 LSmallToe
        1021.1, 968.4, 0.58,  # 21 LHeel
        874.4, 993.1, 0.57,   # 22 RBigToe
        861.0, 987.6, 0.49,   # 23 RSmallToe
        897.5, 969.2, 0.60,   # 24 RHeel
    ]
    # Face point 0 (right jaw) written out, the other 69 generated along the face.
    face = [931.2, 190.4, 0.83] + [
        v for i in range(1, 70) for v in (931.2 + i * 0.6, 190.4 + (i % 17) * 3.1, 0.7)]
    hand_left = [1120.6, 556.9, 0.66] + [
        v for i in range(1, 21) for v in (1120.6 + 2 * i, 560.0 + 3 * i, 0.5)]
    hand_right = [799.4, 563.3, 0.61] + [
        v for i in range(1, 21) for v in (799.4 - 2 * i, 566.0 + 3 * i, 0.4)]
    d = {"version": 1.3, "people": [{
        "person_id": [-1], "pose_keypoints_2d": pose, "face_keypoints_2d": face,
        "hand_left_keypoints_2d": hand_left, "hand_right_keypoints_2d": hand_right,
        "pose_keypoints_3d": [], "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}]}
    (tmp_path / "dance_000000000000_keypoints.json").write_text(json.dumps(d, indent=4))

    seq = oj.read_sequence(tmp_path)
    assert seq.shape == (1, 137, 3)
    p = seq[0]
    f32 = lambda *v: np.array(v, np.float32)
    assert np.array_equal(p[layout.B["RWrist"]], f32(801.2, 560.8, 0.74))
    assert np.array_equal(p[4], f32(801.2, 560.8, 0.74))
    assert np.array_equal(p[layout.B["LWrist"]], f32(1118.4, 552.3, 0.77))
    assert np.array_equal(p[24], f32(897.5, 969.2, 0.60))
    assert not p[layout.B["LEar"]].any()
    assert np.array_equal(p[25], f32(931.2, 190.4, 0.83))      # face point 0
    assert np.array_equal(p[94], f32(*face[-3:]))              # face point 69 (left pupil)
    assert np.array_equal(p[95], f32(1120.6, 556.9, 0.66))     # left hand wrist
    assert np.array_equal(p[116], f32(799.4, 563.3, 0.61))     # right hand wrist
    assert np.array_equal(p[136], f32(*hand_right[-3:]))       # right hand little tip


def test_wrong_length_names_file_and_field(tmp_path):
    path = tmp_path / "coco_000000000000_keypoints.json"
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": [1.0] * 54}]}))
    with pytest.raises(EdnError, match=r"coco_000000000000_keypoints\.json.*pose_keypoints_2d has 54"):
        oj.read_frame_json(path)


@pytest.mark.parametrize("text, match", [
    ('{"version": 1.3, "people": [', "not valid JSON"),
    ('{"version": 1.3}', "no 'people' list"),
    ('{"people": [{"hand_left_keypoints_2d": "oops"}]}', "hand_left_keypoints_2d has str"),
    ('{"people": [{"hand_left_keypoints_2d": ' + json.dumps(["a"] * 63) + "}]}", "not numbers"),
    ('{"people": [7]}', r"people\[0\] is not an object"),
])
def test_malformed_files_raise_one_line_edn_error(tmp_path, text, match):
    path = tmp_path / "bad_000000000000_keypoints.json"
    path.write_text(text)
    with pytest.raises(EdnError, match=match) as info:
        oj.read_sequence(tmp_path)
    assert "\n" not in str(info.value) and "bad_000000000000" in str(info.value)


def test_directory_errors(tmp_path):
    with pytest.raises(EdnError, match="no \\*_keypoints.json files"):
        oj.read_sequence(tmp_path)
    with pytest.raises(EdnError, match="does not exist"):
        oj.read_sequence(tmp_path / "nope")
    oj.write_frame_json(tmp_path / "a_000000000001_keypoints.json", [])
    oj.write_frame_json(tmp_path / "b_1_keypoints.json", [])
    with pytest.raises(EdnError, match="both frame 1"):
        oj.read_sequence(tmp_path)
    with pytest.raises(EdnError, match="person=-1"):
        oj.read_sequence(tmp_path, person=-1)


def test_bad_shapes_raise_edn_error(tmp_path):
    with pytest.raises(EdnError, match=r"\(T, 137, 3\)"):
        oj.write_sequence(tmp_path, np.zeros((4, 25, 3), np.float32))
    with pytest.raises(EdnError, match="person 0"):
        oj.people_to_json_dict([np.zeros((25, 3))])
