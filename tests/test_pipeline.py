"""Pose mode end to end: synthetic subject, real footage, OpenPose JSON input."""

import json
import os

import numpy as np
import pytest

from helpers import real_video, synthetic_pose_config
from configs import default
from edn_jax import main
from edn_jax.errors import EdnError
from edn_jax.pose import layout, openpose_json, pipeline, render
from edn_jax.runtime import video


def test_synthetic_pose_mode_outputs_agree(tmp_path):
    from edn_jax import synthetic

    workdir = str(tmp_path / "work")
    main.run(synthetic_pose_config(24, 128), workdir)
    seq = pipeline.load_keypoints(os.path.join(workdir, "keypoints.npz"))
    exact = synthetic.synthetic_keypoints(0, 24, 128, 128, 30.0)
    np.testing.assert_array_equal(seq.keypoints, exact)  # exact keypoints are not smoothed
    np.testing.assert_array_equal(openpose_json.read_sequence(os.path.join(workdir, "openpose_json")), exact)

    sticks = list(video.iter_frames(os.path.join(workdir, "stick.mp4")))
    assert len(sticks) == 24
    expected = render.render_stick_figure(exact[5], 128, 128)
    assert np.abs(sticks[5].astype(int) - expected.astype(int)).mean() < 4
    other = render.render_stick_figure(exact[20], 128, 128)
    assert np.abs(sticks[5].astype(int) - other.astype(int)).mean() > np.abs(sticks[5].astype(int) - expected.astype(int)).mean()
    overlay = list(video.iter_frames(os.path.join(workdir, "overlay.mp4")))
    assert len(overlay) == 24
    summary = json.load(open(os.path.join(workdir, "pose_summary.json")))
    assert summary["frames"] == summary["frames_with_person"] == 24

    with np.load(os.path.join(workdir, "keypoints.npz")) as z:
        boxes, valid = z["face_boxes"], z["face_valid"]
    assert valid.all()
    face = exact[:, layout.FACE, :2]
    assert (face[..., 0] >= boxes[:, None, 0]).all() and (face[..., 0] <= boxes[:, None, 2]).all()


def test_existing_outputs_are_not_overwritten(tmp_path):
    workdir = str(tmp_path / "work")
    config = synthetic_pose_config(6, 128)
    main.run(config, workdir)
    stamp = os.path.getmtime(os.path.join(workdir, "keypoints.npz"))
    with pytest.raises(EdnError, match="overwrite"):
        main.run(config, workdir)
    assert os.path.getmtime(os.path.join(workdir, "keypoints.npz")) == stamp
    config.overwrite = True
    main.run(config, workdir)


def test_real_video_pose_mode_matches_tracker(tmp_path, tracked_real):
    config = default.get_config()
    config.input.video = real_video("single_person_cam01.mp4")
    config.input.max_frames = 30
    config.pose.output_height = 256
    workdir = str(tmp_path / "work")
    main.run(config, workdir)
    seq = pipeline.load_keypoints(os.path.join(workdir, "keypoints.npz"))
    tracked, _ = tracked_real("single_person_cam01.mp4")  # one detector, full resolution, frame by frame
    assert seq.detected.sum() >= 29 and (seq.height, seq.width, seq.fps) == (1920, 1080, 60.0)
    # The default path (pose.detect_threads/detect_height) crops a little differently: same subject,
    # body points a few source pixels from the frame-by-frame detection.
    raw = seq.raw_keypoints
    both = (raw[:, layout.BODY, 2] > 0) & (tracked[:30, layout.BODY, 2] > 0)
    gap = np.linalg.norm(raw[:, layout.BODY, :2] - tracked[:30, layout.BODY, :2], axis=-1)[both]
    assert np.median(gap) < 8.0, np.median(gap)
    # Smoothing moves points by little: the cleaned body stays within a few pixels of the detection.
    both = (seq.keypoints[:, layout.BODY, 2] > 0) & (seq.raw_keypoints[:, layout.BODY, 2] > 0)
    shift = np.linalg.norm(seq.keypoints[:, layout.BODY, :2] - seq.raw_keypoints[:, layout.BODY, :2], axis=-1)
    assert np.median(shift[both]) < 5.0
    info = video.probe_video(os.path.join(workdir, "overlay.mp4"))
    assert (info.height, info.width) == (256, 144)


def test_openpose_json_input_tracks_one_of_two_people(tmp_path):
    from edn_jax import synthetic

    a = synthetic.synthetic_keypoints(1, 20, 200, 400, 30.0)
    b = synthetic.synthetic_keypoints(2, 20, 200, 400, 30.0)
    b[..., 0] = np.where(b[..., 2] > 0, b[..., 0] * 0.5 + 200, 0)  # a second, smaller person on the right
    b[..., 1] = np.where(b[..., 2] > 0, b[..., 1] * 0.5 + 50, 0)
    jdir = tmp_path / "json"
    for t in range(20):
        # The order of people in the files changes from frame to frame, as in OpenPose output.
        openpose_json.write_frame_json(openpose_json.frame_path(jdir, t), [a[t], b[t]] if t % 2 else [b[t], a[t]])
    config = default.get_config()
    config.input.openpose_dir = str(jdir)
    config.input.openpose_size = (200, 400)
    config.pose.smoothing = "none"
    main.run(config, str(tmp_path / "work"))
    seq = pipeline.load_keypoints(str(tmp_path / "work" / "keypoints.npz"))
    np.testing.assert_array_equal(seq.keypoints, a)  # the larger person, every frame



def test_pose_mode_says_per_frame_why_the_subject_is_missing(tmp_path):
    from edn_jax import synthetic

    n = 36
    a = synthetic.synthetic_keypoints(1, n, 200, 400, 30.0)
    b = synthetic.synthetic_keypoints(2, n, 200, 400, 30.0)
    b[..., 0] = np.where(b[..., 2] > 0, b[..., 0] * 0.5 + 30, 0)  # someone else, smaller, on the left
    b[..., 1] = np.where(b[..., 2] > 0, b[..., 1] * 0.5 + 50, 0)
    jdir = tmp_path / "json"
    for t in range(n):
        people = [] if 10 <= t < 13 else [b[t]] if 13 <= t < 17 or 20 <= t < 34 else [a[t]]
        openpose_json.write_frame_json(openpose_json.frame_path(jdir, t), people)
    config = default.get_config()
    config.input.openpose_dir = str(jdir)
    config.input.openpose_size = (200, 400)
    main.run(config, str(tmp_path / "work"))
    # Frames 10-16 (7 <= pose.max_gap) are filled in; 20-33 are too many.
    expected = ["tracked"] * 10 + ["filled"] * 7 + ["tracked"] * 3 + ["other_person"] * 14 + ["tracked"] * 2
    with open(tmp_path / "work" / "pose_summary.json") as f:
        summary = json.load(f)
    assert summary["frame_status"] == {"tracked": 15, "filled": 7, "not_detected": 0, "other_person": 14}
    assert summary["frames_without_subject"] == [
        {"first": 10, "last": 12, "status": "filled", "reason": "not_detected"},
        {"first": 13, "last": 16, "status": "filled", "reason": "other_person"},
        {"first": 20, "last": 33, "status": "other_person", "reason": "other_person"}]
    # Every frame that is not tracked has the tracker's reason: nobody found, or who was found and why not.
    reasons = {r["frame"]: r for r in summary["frame_reasons"]}
    assert sorted(reasons) == [t for t, s in enumerate(expected) if s != "tracked"]
    for t in range(10, 13):
        assert reasons[t]["status"] == "filled" and reasons[t]["reason"].startswith("nobody found"), reasons[t]
    for t in list(range(13, 17)) + list(range(20, 34)):
        assert reasons[t]["reason"].startswith("1 found, none the subject"), reasons[t]
        assert "far" in reasons[t]["reason"] or "size" in reasons[t]["reason"], reasons[t]
    seq = pipeline.load_keypoints(str(tmp_path / "work" / "keypoints.npz"))
    assert seq.status.tolist() == expected
    assert seq.missing_reason.tolist() == ([""] * 10 + ["not_detected"] * 3 + ["other_person"] * 4 + [""] * 3
                                           + ["other_person"] * 14 + [""] * 2)
    assert [seq.tracker_reasons[t] for t in sorted(reasons)] == [reasons[t]["reason"] for t in sorted(reasons)]
