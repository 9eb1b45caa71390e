"""The normalization benchmark's known answer: a source filmed by the target's own camera is its own
answer, the answer differs from the raw source, and a fault costs accuracy."""

import numpy as np

from benchmarks import normalization_accuracy as na


def test_the_answer_is_what_the_target_camera_films():
    z, x = na.depth_path(60, periods=1.0, phase=0.3)
    unit = na.unit_poses(2, 60)
    truth = na.film(unit, z, x, na.TARGET)
    feet = truth[:, list(na.layout.ANKLES), 1].max(-1)
    np.testing.assert_allclose(feet, na.TARGET.horizon + na.TARGET.focal * na.TARGET.height / z, atol=1.0)  # the lower ankle on the floor
    assert na.body_error(truth, truth) == 0.0
    other = na.film(unit, z, x, na.SOURCES["near/far walk, larger and lower"])
    assert na.body_error(other, truth) > 10.0


def test_robust_recovers_a_clean_source_and_faults_cost_accuracy():
    rows = {(r["source"], r["fault"]): r for r in na.run(120, 240)}
    clean = rows[("near/far walk, smaller and higher in frame", "none")]
    assert clean["robust"] < 1.0 < 20.0 < clean["unnormalized"]
    # the paper's fixed anchor: the feet drift by (s - 1) * (toe - a_y) as the source walks in depth
    assert clean["paper"] > 5.0
    jump = rows[("near/far walk, smaller and higher in frame", "a jump")]
    assert jump["robust"] > clean["robust"] + 1.0


def test_a_walk_across_a_wide_frame_stays_inside_the_targets_range_and_the_frame():
    """transfer.travel: with the source's full travel the walker leaves the frame and the target's
    range; fit into the target's travel, every figure stays inside both, the pose unchanged."""
    full, fit = (na.run_wide_walk(300, 240)[m] for m in ("robust", "robust, travel fit"))  # 8 m in 5 s
    assert full["figures_inside_frame"] < 0.6 and full["ankles_in_target_range"] < 0.3
    assert fit["figures_inside_frame"] == 1.0 and fit["ankles_in_target_range"] >= 0.95
    assert fit["travel_px"] < 1.2 * fit["target_range_px"] < 0.3 * full["travel_px"]
    assert abs(fit["pose_error_px"] - full["pose_error_px"]) < 0.5
