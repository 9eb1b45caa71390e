"""Motion sources: globs, lists and names, the nearest pose held over frames without a person, and
the target's pose statistics mapped into the model's frame."""

import numpy as np
import pytest

from configs import default
from edn_jax import synthetic
from edn_jax.errors import EdnError
from edn_jax.pose import layout, normalization, render
from edn_jax.transfer import sources


def test_hold_nearest_pose():
    kps = np.zeros((7, layout.NUM_KEYPOINTS, 3), np.float32)
    for t in (2, 3, 6):
        kps[t, :, :2], kps[t, :, 2] = t, 1.0
    filled, held = sources.hold_nearest_pose(kps)
    assert held.tolist() == [True, True, False, False, True, True, False]
    # Frames 0-1 take frame 2 (the first pose), 4 the nearer 3, 5 the nearer 6.
    assert [int(f[0, 0]) for f in filled] == [2, 2, 2, 3, 3, 6, 6]
    with pytest.raises(EdnError, match="no person in any of the 7 frames"):
        sources.hold_nearest_pose(np.zeros_like(kps))


def test_stats_in_frame_match_statistics_of_moved_poses():
    kps = synthetic.synthetic_keypoints(4, 60, 96, 64)
    tf = render.fit_transform((96, 64), (128, 256), "pad")
    mapped = sources.stats_in_frame(normalization.pose_statistics(kps), tf)
    direct = normalization.pose_statistics(render.transform_keypoints(kps, tf))
    for name, a, b in zip(normalization.PoseStats._fields, mapped, direct):
        assert abs(float(a) - float(b)) < 0.05 * max(1.0, abs(float(b))), name


def test_sources_from_globs_lists_and_names(tmp_path):
    config = default.get_config()
    for name in ("b.mp4", "a.mp4", "c.txt"):
        (tmp_path / name).write_text("x")
    config.transfer.source = str(tmp_path / "*.mp4")
    assert [s.name for s in sources.resolve_sources(config)] == ["a", "b"]
    pose_dir = tmp_path / "pose_cam01"
    pose_dir.mkdir()
    config.transfer.source = f"{tmp_path / 'a.mp4'}, {pose_dir / 'keypoints.npz'}"
    assert [(s.name, s.kind) for s in sources.resolve_sources(config)] == [("a", "video"), ("pose_cam01", "keypoints")]
    (tmp_path / "list.txt").write_text("# relative to the list\nb.mp4\n\npose_cam01\n")
    config.transfer.source = f"@{tmp_path / 'list.txt'}"
    specs = sources.resolve_sources(config)
    assert [(s.name, s.kind, s.path) for s in specs] == [("b", "video", str(tmp_path / "b.mp4")),
                                                         ("pose_cam01", "openpose", str(pose_dir))]
    config.transfer.source = str(tmp_path / "*.avi")
    with pytest.raises(EdnError, match="matches no file"):
        sources.resolve_sources(config)
    config.transfer.source = f"@{tmp_path / 'missing.txt'}"
    with pytest.raises(EdnError, match="source list not found"):
        sources.resolve_sources(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.mp4").write_text("x")
    config.transfer.source = f"{tmp_path / 'a.mp4'},{tmp_path / 'other' / 'a.mp4'}"
    with pytest.raises(EdnError, match="would both write a.mp4"):
        sources.resolve_sources(config)
    config.transfer.source = ""
    assert [(s.name, s.kind) for s in sources.resolve_sources(config)] == [("synthetic_seed1", "synthetic")]


def _prepared(tmp_path, kps, source_hw, model_hw, **transfer):
    """``kps`` [T, 137, 3] of a source_hw video saved as pose mode would, prepared for a model_hw
    model of the synthetic subject with ``transfer`` fields set."""
    from edn_jax.pose import pipeline

    path = str(tmp_path / "source.npz")
    pipeline.save_keypoints(path, pipeline.PoseSequence(kps, kps, 30.0, *source_hw, "synthetic:2"))
    config = default.get_config()
    config.transfer.source = path
    for key, value in transfer.items():
        config.transfer[key] = value
    target = normalization.pose_statistics(synthetic.synthetic_keypoints(0, 120, *model_hw))
    return sources.prepare_source(config, sources.resolve_sources(config)[0], *model_hw, target)


@pytest.mark.parametrize("rule", ["hold", "plate"])
def test_frames_without_a_person_follow_the_chosen_rule(tmp_path, rule):
    """transfer.no_person: frames the gap filler could not reach hold the nearest pose, placed as the
    normalization places its frame ("hold"), or have no figure at all ("plate")."""
    kps = synthetic.synthetic_keypoints(2, 60, 128, 128)
    kps[25:45] = 0.0  # the person lost for 20 frames, and not filled
    prepared = _prepared(tmp_path, kps, (128, 128), (128, 128), no_person=rule)
    assert prepared.held.tolist() == [25 <= t < 45 for t in range(60)]
    present = prepared.keypoints[:, layout.BODY, 2].max(axis=1) > 0
    if rule == "plate":
        assert not present[25:45].any() and present[:25].all() and present[45:].all()
        assert not render.render_stick_figures(prepared.keypoints[25:45], 128, 128).any()  # nothing asked
    else:
        assert present.all()
        # Frames 25-34 hold frame 24's pose, 35-44 frame 45's, each where the normalization put it.
        np.testing.assert_array_equal(prepared.keypoints[30], prepared.keypoints[24])
        np.testing.assert_array_equal(prepared.keypoints[40], prepared.keypoints[45])


@pytest.mark.parametrize("travel", ["fit", "full"])
def test_a_source_walking_out_of_the_frame_is_kept_inside_it_unless_its_full_travel_is_asked(tmp_path, travel):
    kps = synthetic.synthetic_keypoints(2, 60, 128, 256)
    present = kps[..., 2] > 0
    kps[..., 0] = np.where(present, kps[..., 0] + np.linspace(-140, 140, 60)[:, None], 0)  # across and out
    prepared = _prepared(tmp_path, kps, (128, 256), (96, 64), travel=travel)
    drawn = render.render_stick_figures(prepared.keypoints, 96, 64).max(axis=-1) > 0
    edges = drawn[:, 0].any(1) | drawn[:, -1].any(1) | drawn[:, :, 0].any(1) | drawn[:, :, -1].any(1)
    if travel == "fit":
        assert drawn.any(axis=(1, 2)).all() and not edges.any() and prepared.travel_kept < 0.5
    else:
        assert edges.sum() + (~drawn.any(axis=(1, 2))).sum() >= 10 and prepared.travel_kept == 1.0
