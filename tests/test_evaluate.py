"""Evaluate mode: per-frame scores against known values, body crops, pose distance through the whole
evaluation with a detector whose answer is known, and the real-footage run (single_person_cam01,
trained on its first 80 frames, evaluated on the last 20) end to end through the CLI entry point."""

import copy
import csv
import glob
import json
import os

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metric_writers

from helpers import one_device_mesh, real_video, tensorboard_tags
from configs import default
from edn_jax import main, stages
from edn_jax.data import build, dataset
from edn_jax.errors import EdnError
from edn_jax.evaluation import evaluate, holdout, metrics
from edn_jax.evaluation.held_out import FRAME_SCORES, frame_scores
from edn_jax.models import checkpoints, inference
from edn_jax.pose import layout
from edn_jax.pose import detector as pose_detector
from edn_jax.runtime import video
from edn_jax.training import train
from edn_jax.training.generator_stage import GeneratorTrainer


@pytest.fixture(scope="module")
def lpips():
    return metrics.make_lpips("alex")


def test_box_crops_are_slices_for_aligned_boxes_and_keep_the_aspect():
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 40, 40, 3)).astype(np.float32))
    # A 16x32 box at scale 1 is a plain slice; a 4x32 box is widened about its centre to 16x32.
    boxes = jnp.asarray([[4, 6, 20, 38], [10, 6, 14, 38]], jnp.float32)
    crops = np.asarray(metrics.box_crops(images, boxes, (32, 16)))
    np.testing.assert_allclose(crops[0], np.asarray(images[0, 6:38, 4:20]), atol=1e-5)
    np.testing.assert_allclose(crops[1], np.asarray(images[1, 6:38, 4:20]), atol=1e-5)
    # Shrinking a box inside the frame is a normalised filter: a flat image stays flat.
    flat = jnp.full((1, 40, 40, 3), 0.25, jnp.float32)
    halved = np.asarray(metrics.box_crops(flat, jnp.asarray([[4, 4, 36, 36]], jnp.float32), (16, 16)))
    np.testing.assert_allclose(halved, 0.25, atol=1e-6)


def test_frame_scores_are_perfect_on_the_real_frames_and_worsen_with_noise(lpips):
    rng = np.random.default_rng(1)
    real = np.clip(rng.normal(0, 0.3, (3, 48, 48, 3)).cumsum(axis=1) * 0.2, -1, 1).astype(np.float32)
    body = jnp.asarray([[8, 4, 40, 44]] * 3, jnp.float32)
    face = jnp.asarray([[20, 6, 28, 14]] * 3, jnp.float32)
    valid = jnp.asarray([True, True, False])
    score = lambda x: {k: np.asarray(v) for k, v in frame_scores(  # noqa: E731
        lpips, jnp.asarray(x), jnp.asarray(real), body, face, valid, face_side=16, body_size=(64, 32)).items()}
    same = score(real)
    for key in ("ssim", "body_ssim"):
        np.testing.assert_allclose(same[key], 1.0, atol=1e-5)
    np.testing.assert_allclose(same["face_ssim"][:2], 1.0, atol=1e-5)
    np.testing.assert_allclose(same["body_lpips"], 0.0, atol=1e-6)
    np.testing.assert_allclose(same["face_lpips"][:2], 0.0, atol=1e-6)
    assert np.isnan(same["face_ssim"][2]) and np.isnan(same["face_lpips"][2])  # no face in frame 3
    previous = same
    for sigma in (0.05, 0.2, 0.5):
        noisy = score(np.clip(real + rng.normal(0, sigma, real.shape), -1, 1))
        for key in ("ssim", "body_ssim"):
            assert (noisy[key] < previous[key]).all(), (key, sigma)
        for key in ("body_lpips",):
            assert (noisy[key] > previous[key]).all(), (key, sigma)
        assert (noisy["face_lpips"][:2] > previous["face_lpips"][:2]).all()
        previous = noisy


class KnownDetector:
    """Returns, call after call, the held-out input keypoints shifted by (3, 4) px: one stream's
    detector, one call per frame."""

    def __init__(self, keypoints):
        self.answers = list(keypoints)

    def detect(self, frame):
        kps = self.answers.pop(0).copy()
        kps[:, :2] += np.float32([3, 4]) * (kps[:, 2:] > 0)
        return kps if (kps[:, 2] > 0).any() else None


def held_out(config, workdir):
    summary = json.load(open(os.path.join(workdir, "train_summary.json")))
    split = dataset.open_split(summary["dataset"], "validation")
    order = np.lexsort((split.frame_indices, split.video_ids))
    return split, order, holdout.records_at(split, order, config.train.height, config.train.width)


def test_cam01_evaluation_end_to_end(cam01_target, tmp_path, capsys):
    base, model_dir = cam01_target
    config = copy.deepcopy(base)
    config.mode = "evaluate"
    config.evaluate.model_workdir = model_dir
    workdir = str(tmp_path / "eval")
    main.run(config, workdir)
    out_dir = os.path.join(workdir, "evaluation", "global")
    result = json.load(open(os.path.join(out_dir, "metrics.json")))
    rows = list(csv.DictReader(open(os.path.join(out_dir, "per_frame.csv"))))

    # The last 20 of the first 100 frames, in order, one video.
    assert result["frames"] == 20 and result["videos"] == 1 and result["frame_size_hw"] == [128, 128]
    assert [int(r["frame"]) for r in rows] == list(range(80, 100))
    assert "128x128" in result["units"]["pose_distance"]
    g, real = result["generated"], result["real"]
    assert 0 < g["ssim"] < 0.99 and 0 < g["body_lpips"] < 1.5 and g["frame_jitter"] > 0
    assert real["frame_jitter"] > 0 and real["frame_jitter"] != g["frame_jitter"]
    # The detector on the real held-out frames finds the person where the input says (the floor).
    assert real["pose"]["body_missed_rate"] < 0.5, real["pose"]
    assert real["pose"]["body_distance"] < 0.03 * 128, real["pose"]
    assert 0 <= g["pose"]["overall_missed_rate"] <= 1
    assert real["keypoint_jitter"]["body"] is not None
    assert os.path.getsize(os.path.join(out_dir, "samples.png")) > 0
    frames = list(video.iter_frames(os.path.join(out_dir, "side_by_side.mp4")))
    assert len(frames) == 20 and frames[0].shape == (128, 3 * 128, 3)
    assert glob.glob(os.path.join(workdir, "tensorboard", "evaluate_global", "events.out.tfevents.*"))
    page = open(os.path.join(workdir, "report", "index.html")).read()  # the results page shows the table
    assert f"<td>generated</td><td>{g['ssim']:.3f}</td>" in page and 'src="../evaluation/global/per_frame.png"' in page
    out = capsys.readouterr().out
    assert "pose distance, generated (px at 128x128)" in out
    # The table puts the model next to both baselines, image scores and pose distance alike.
    for row in ("mean training frame", "nearest training frame by pose", "pose distance, nearest training frame"):
        assert row in out, row
    for side in ("mean_train_frame", "nearest_train_frame"):
        assert 0 < result[side]["body_ssim"] < 1 and 0 < result[side]["body_ssim_crop"] <= 1
    assert result["nearest_train_frame"]["pose"]["body_pairs"] > 0
    # Each frame's baseline scores are in the CSV (their means are the table's) and plotted.
    for side in ("mean_train_frame", "nearest_train_frame"):
        for score in ("ssim", "body_lpips"):
            column = [float(r[f"{score}_{side}"]) for r in rows]
            np.testing.assert_allclose(np.mean(column), result[side][score], rtol=1e-5)
    assert [float(r["ssim_nearest_train_frame"]) for r in rows] != [float(r["ssim"]) for r in rows]
    plot = cv2.imread(result["outputs"]["per_frame_plot"])
    assert plot is not None and plot.shape[0] > 400 and plot.std() > 10  # a drawn figure, not a blank
    assert {"evaluate/generated/body_ssim", "evaluate/generated/body_ssim_crop", "evaluate/mean_train_frame/ssim",
            "evaluate/nearest_train_frame/body_lpips", "evaluate/real/pose/body_distance",
            "evaluate/generated/pose_paper/body_missed_per_frame", "evaluate/stick_generated_real_nearest"} <= \
        tensorboard_tags(os.path.join(workdir, "tensorboard", "evaluate_global"))

    # Scores are of a sequential render: the per-frame SSIM equals one scan over all 20 frames
    # (the evaluation rendered them in chunks of 16, passing the carry on).
    split, order, held = held_out(base, model_dir)
    model = checkpoints.load_trained_model(base, model_dir)
    fake, _ = inference.render_chunk(model.renderer, model.params, jnp.asarray(held["label"]),
                                     jnp.asarray(held["face_box"]), jnp.asarray(held["face_valid"]),
                                     inference.initial_carry(128, 128))
    ssim = np.asarray(metrics.ssim((fake + 1) / 2, (jnp.asarray(held["frame"]) + 1) / 2))
    np.testing.assert_allclose([float(r["ssim"]) for r in rows], ssim, atol=1e-4)

    # A rerun reports the existing result instead of redoing it; overwrite redoes it.
    mtime = os.path.getmtime(os.path.join(out_dir, "metrics.json"))
    main.run(config, workdir)
    assert "already evaluated" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out_dir, "metrics.json")) == mtime


def test_pose_distance_through_the_evaluation_with_a_known_detector(cam01_target, tmp_path):
    """A detector that answers the input keypoints shifted by (3, 4) px gives a pose distance of
    exactly 5 px for every part it sees, misses nothing, and the input's keypoint jitter."""
    base, model_dir = cam01_target
    config = copy.deepcopy(base)
    config.evaluate.detect_min_side = 0  # no upscaling: the detector's pixels are the frame's
    _, _, held = held_out(base, model_dir)
    made = []

    def factory():
        made.append(KnownDetector(held["keypoints"]))
        return made[-1]

    result = evaluate.evaluate_model(config, model_dir, str(tmp_path), detector_factory=factory)
    assert len(made) == 3 and not any(d.answers for d in made)  # one detector per stream, one call per frame
    for side in ("generated", "real", "nearest_train_frame"):
        pose = result[side]["pose"]
        for part in ("body", "face", "hands", "overall"):
            if pose[f"{part}_pairs"]:
                assert pose[f"{part}_distance"] == pytest.approx(5.0, abs=1e-4), (side, part)
                assert pose[f"{part}_missed_rate"] == 0.0
        assert pose["body_pairs"] > 0
        assert result[side]["keypoint_jitter"]["body"] == pytest.approx(result["input_keypoint_jitter"]["body"],
                                                                         rel=1e-4)
        paper = result[side]["pose_paper"]  # the paper's protocol: the same 5 px, in 512-row pixels
        assert any(paper[f"{part}_compared"] for part in ("body", "face", "hands")), paper
        for part in ("body", "face", "hands", "overall"):
            if paper[f"{part}_compared"]:
                assert paper[f"{part}_distance"] == pytest.approx(5.0 * 512 / 128, abs=1e-3), (side, part)
            assert paper[f"{part}_missed_per_frame"] == 0.0
    rows = list(csv.DictReader(open(tmp_path / "per_frame.csv")))
    assert all(float(r["pose_distance_generated"]) == pytest.approx(5.0, abs=1e-4) for r in rows)
    assert (held["keypoints"][:, layout.BODY, 2] > 0).any()


@pytest.mark.parametrize("field,value,fragment", [
    ("lpips_net", "squeeze", "lpips_net"), ("chunk_frames", 0, "chunk_frames"), ("stage", "local", "not one of"),
])
def test_bad_evaluate_values(cam01_target, tmp_path, field, value, fragment):
    config = copy.deepcopy(cam01_target[0])
    config.mode = "evaluate"
    config.evaluate.model_workdir = cam01_target[1]
    config.evaluate[field] = value
    with pytest.raises(EdnError, match=fragment):
        main.run(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "evaluation" / "global" / "metrics.json")


def test_evaluating_a_workdir_without_a_model_is_refused(tmp_path):
    from configs import tiny

    config = tiny.get_config()
    config.mode = "evaluate"
    with pytest.raises(EdnError, match="no checkpoints directory"):
        main.run(config, str(tmp_path))


def test_one_evaluator_scores_the_end_of_training_and_evaluate_mode_alike(cam01_target, tmp_path, capsys):
    """The end of a stage (short: no detector, no files) and evaluate mode give the same scores for the
    same frames, baselines included; the mean-frame baseline is the mean of 64 training frames."""
    base, model_dir = cam01_target
    mesh = one_device_mesh()
    stage = stages.plan_stages(base)[0]
    trainer = GeneratorTrainer.create(base, mesh, stage)
    state = train.restore_final(model_dir, base, mesh, stage)
    writer = metric_writers.create_default_writer(str(tmp_path / "tb"), just_logging=True)
    at_stage_end = train.evaluate_stage(base, str(tmp_path), trainer, state, build.model_dataset_dir(base, model_dir),
                                        writer, stage.num_steps)
    assert "held-out SSIM (20 frames)" in capsys.readouterr().out
    full = evaluate.evaluate_model(base, model_dir, str(tmp_path / "eval"))
    for candidate in ("generated", "mean_train_frame"):
        for key in FRAME_SCORES:
            assert at_stage_end[f"{key}_{candidate}"] == pytest.approx(full[candidate][key], rel=1e-6), (candidate, key)
    assert full["mean_train_frame"]["body_ssim"] != full["generated"]["body_ssim"]
    split, _, held = held_out(base, model_dir)
    train_split = dataset.open_split(full["dataset"], "train")
    sample = np.linspace(0, len(train_split.source) - 1, 64).astype(int)
    mean = holdout.records_at(train_split, sample, 128, 128)["frame"].mean(0, keepdims=True)
    ssim = metrics.ssim((jnp.asarray(mean) + 1) / 2, (jnp.asarray(held["frame"]) + 1) / 2)
    assert full["mean_train_frame"]["ssim"] == pytest.approx(float(np.mean(ssim)), abs=1e-5)


def _degraded(frame):
    """A generated-looking copy: blurred and noisy."""
    noise = np.random.default_rng(int(frame.sum()) % 1000).normal(0, 25, frame.shape)
    return np.clip(cv2.GaussianBlur(frame, (9, 9), 3).astype(np.float64) + noise, 0, 255).astype(np.uint8)


def test_one_detector_per_stream_keeps_the_real_frames_detections_clean():
    """The real detector (MediaPipe Holistic) on frames 60-89 of single_person_cam01 at 144x256: one
    detector alternating real frames with degraded copies finds other points on the real frames than a
    detector that sees only them (Holistic carries regions from call to call); a detector per stream,
    as the evaluator runs them, finds the same points as the real frames alone."""
    frames = [cv2.resize(f, (256, 144), interpolation=cv2.INTER_AREA)
              for f in video.iter_frames(real_video("single_person_cam01.mp4"), 90)][60:]
    config = default.get_config()

    def detect_all(detector, stream):
        return np.stack([pose_detector.detect_upscaled(detector, f, 256) for f in stream])

    with evaluate.make_detector(config) as alone:
        clean = detect_all(alone, frames)
    with evaluate.make_detector(config) as shared:
        mixed = np.stack([pose_detector.detect_upscaled(shared, f, 256) for pair in zip(frames, map(_degraded, frames))
                          for f in pair])[0::2]
    with evaluate.make_detector(config) as real, evaluate.make_detector(config) as generated:
        separate = []
        for f in frames:
            separate.append(pose_detector.detect_upscaled(real, f, 256))
            pose_detector.detect_upscaled(generated, _degraded(f), 256)
    changed = [t for t in range(len(frames)) if not np.array_equal(mixed[t], clean[t])]
    assert changed, "interleaving no longer changes the real frames' detections: the check below proves nothing"
    np.testing.assert_array_equal(np.stack(separate), clean)
    assert (clean[:, layout.BODY, 2] > 0).any(axis=1).sum() >= 20  # a person found on most frames
