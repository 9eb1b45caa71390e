"""Transfer mode: videos end to end (frames, fps, audio, side by side, no-person frames), refusals,
batch failures, interruptions resumed chunk by chunk, and real footage normalized onto the target's floor."""

import copy
import json
import os
import subprocess
import sys

import cv2
import imageio_ffmpeg
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import (REPO, SYNTHETIC_TARGET_SIZE as SIZE, assert_facts, real_video, reference_render,
                     synthetic_target_config, transfer_config)
from edn_jax import main, synthetic
from edn_jax.data import dataset
from edn_jax.errors import EdnError
from edn_jax.evaluation import self_score
from edn_jax.evaluation.self_score import SelfScore, asked_region, people_counts
from edn_jax.pose import layout, normalization, paper_normalization, pipeline
from edn_jax.runtime import video
from edn_jax.transfer import render_resume, rendering, sources
from edn_jax.transfer.target import load_target


def decode(path):
    return np.stack(list(video.iter_frames(path)))


def through_codec(frames, fps, tmp_path):
    """``frames`` after the same H.264 encoding the outputs get: what an exact render decodes to."""
    path = str(tmp_path / "reference.mp4")
    video.write_video(path, frames, fps)
    decoded = decode(path)
    os.remove(path)
    return decoded


def mean_abs(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


# ----------------------------------------------------------------------------- end to end


def spy_on_writes(monkeypatch):
    """{output path: frames handed to the encoder}, recorded as transfer writes them."""
    written, original = {}, video.SegmentedVideoWriter.write_chunk

    def write_chunk(self, frames):
        written.setdefault(os.path.basename(self.path), []).extend(np.array(f) for f in frames)
        original(self, frames)

    monkeypatch.setattr(video.SegmentedVideoWriter, "write_chunk", write_chunk)
    return written


def test_synthetic_transfer_end_to_end(synthetic_target, tmp_path, monkeypatch, capsys):
    config = transfer_config(synthetic_target, synthetic_seed=3, synthetic_frames=20, chunk_frames=8, side_by_side=True)
    config.synthetic.fps = 24.0
    workdir = str(tmp_path / "out")
    written = spy_on_writes(monkeypatch)
    main.run(config, workdir)
    progress = capsys.readouterr().err
    assert_facts(progress, "1 video(s)", "face model", "20/20 (100%)", "frames/s")
    assert sorted(os.listdir(workdir)) == ["report", "synthetic_seed3.mp4", "synthetic_seed3_side_by_side.mp4",
                                           "transfer_summary.json"]
    page = open(os.path.join(workdir, "report", "index.html")).read()  # the results page, with this run on it
    assert 'src="../synthetic_seed3.mp4"' in page and 'src="../synthetic_seed3_side_by_side.mp4"' in page
    assert [r["mode"] for r in json.load(open(os.path.join(workdir, "report", "runs.json")))] == ["transfer"]
    path = os.path.join(workdir, "synthetic_seed3.mp4")
    info = video.probe_video(path)
    assert abs(info.fps - 24.0) < 1e-3 and (info.height, info.width) == (SIZE, SIZE)
    frames = decode(path)
    assert len(frames) == 20

    # The poses: the synthetic dancer fit into the model frame and normalized to the target's statistics.
    target = load_target(config)
    summary = json.load(open(os.path.join(synthetic_target[1], "train_summary.json")))
    split = dataset.open_split(summary["dataset"], "train")
    raw = synthetic.synthetic_keypoints(3, 20, SIZE, SIZE, 24.0)
    # transfer.travel="fit": the travel fit into the target's (averaged over half a second) and kept in frame.
    normalized = normalization.normalize_sequence(raw, normalization.pose_statistics(raw), split.stats,
                                                  fit_travel=True, travel_window=sources.travel_window(24.0))
    expected_kps = np.asarray(normalization.keep_in_frame(normalized, SIZE, SIZE, sources.frame_margin(SIZE, SIZE))[0])
    assert np.abs(expected_kps - np.asarray(normalization.normalize_sequence(
        raw, normalization.pose_statistics(raw), split.stats))).max() < 2.0  # a small shift: the travel nearly fits
    source = sources.prepare_source(config, sources.resolve_sources(config)[0], target.height, target.width,
                                    target.stats)
    np.testing.assert_allclose(source.keypoints, expected_kps, atol=1e-3)
    assert not np.allclose(source.keypoints, raw, atol=1.0)  # normalization moved the dancer

    expected, labels = reference_render(target, expected_kps)
    # Chunks of 8 (the last one padded) chained by their carry = one scan over all 20 frames, up to
    # float rounding (vmapped and sharded); then H.264, which spreads a rounding step over its block.
    rendered = np.stack(written["synthetic_seed3.mp4"])
    assert np.abs(rendered.astype(int) - expected.astype(int)).max() <= 1
    reference = through_codec(expected, 24.0, tmp_path)
    error = mean_abs(frames, reference)
    assert error < 4.0, error
    assert mean_abs(frames[:-1], reference[1:]) > 2 * error  # each frame is its own output, in order

    # Side by side: the source frame | the normalized stick figure | the output.
    sbs = decode(os.path.join(workdir, "synthetic_seed3_side_by_side.mp4"))
    assert sbs.shape == (20, SIZE, 3 * SIZE, 3)
    panels = np.stack(written["synthetic_seed3_side_by_side.mp4"])
    source_frames = np.stack([synthetic.render_synthetic_frame(k, SIZE, SIZE, 1) for k in raw])
    np.testing.assert_array_equal(panels[:, :, :SIZE], source_frames)
    np.testing.assert_array_equal(panels[:, :, SIZE:2 * SIZE], labels)
    np.testing.assert_array_equal(panels[:, :, 2 * SIZE:], rendered)
    assert mean_abs(sbs, through_codec(panels, 24.0, tmp_path)) < 4.0

    summary = json.load(open(os.path.join(workdir, "transfer_summary.json")))
    (entry,) = summary["sources"]
    assert entry["status"] == "rendered" and entry["frames"] == 20 and entry["fps"] == 24.0
    assert entry["frames_without_person"] == 0 and entry["normalized"] and not entry["audio"]


def _clip_with_gaps_and_audio(tmp_path, frames=12, blank=(0, 5, 6, 11)):
    """Real footage, downscaled, with frames blacked out (nobody to detect) and a 440 Hz audio track."""
    silent = str(tmp_path / "silent.mp4")
    shots = []
    for t, frame in enumerate(video.iter_frames(real_video("single_person_cam01.mp4"), frames)):
        small = cv2.resize(frame, (272, 480), interpolation=cv2.INTER_AREA)
        shots.append(np.zeros_like(small) if t in blank else small)
    video.write_video(silent, shots, fps=30)
    clip = str(tmp_path / "dancer.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", silent, "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=3", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-c:a", "aac", clip], check=True)
    os.remove(silent)
    assert video.has_audio(clip)
    return clip


def test_paper_normalization_runs_the_original_algorithm_on_the_targets_training_poses(synthetic_target):
    config = transfer_config(synthetic_target, synthetic_seed=3, synthetic_frames=20, normalization="paper")
    target = load_target(config)
    split = dataset.open_split(target.dataset_dir, "train")
    assert target.poses.shape == (len(split.source), 137, 3)
    np.testing.assert_array_equal(target.poses, dataset.split_keypoints(split, target.height, target.width))
    spec = sources.resolve_sources(config)[0]
    paper = sources.prepare_source(config, spec, target.height, target.width, target.stats, target.poses)
    raw = synthetic.synthetic_keypoints(3, 20, SIZE, SIZE, config.synthetic.fps)
    expected = np.asarray(paper_normalization.normalize_sequence_paper(raw, target.poses, SIZE))
    np.testing.assert_allclose(paper.keypoints, expected, atol=1e-3)
    config.transfer.normalization = "robust"
    robust = sources.prepare_source(config, spec, target.height, target.width, target.stats)
    assert np.abs(paper.keypoints - robust.keypoints).max() > 0.5  # two methods, two answers
    config.transfer.normalization = "median"
    with pytest.raises(EdnError) as caught:
        rendering.validate_transfer_config(config)
    assert_facts(caught.value, "transfer.normalization='median'", "robust, paper")


def test_real_video_source_keeps_audio_and_fills_frames_without_a_person(synthetic_target, tmp_path):
    clip = _clip_with_gaps_and_audio(tmp_path)
    config = transfer_config(synthetic_target, source=clip, chunk_frames=8)
    workdir = str(tmp_path / "out")
    main.run(config, workdir)
    out = os.path.join(workdir, "dancer.mp4")
    assert video.has_audio(out)
    assert len(decode(out)) == 12 and abs(video.probe_video(out).fps - 30.0) < 1e-3
    (entry,) = json.load(open(os.path.join(workdir, "transfer_summary.json")))["sources"]
    assert entry["audio"] and entry["frames"] == 12
    # Frames 5-6 lie between detections (gap fill); 0 and 11 are at the ends (held).
    assert (entry["frames_without_person"], entry["interpolated"], entry["held"]) == (4, 2, 2)
    assert sorted(os.listdir(workdir)) == ["dancer.mp4", "report", "transfer_summary.json"]


# ----------------------------------------------------------------------------- refusals and failures


def test_missing_model_is_refused(tmp_path):
    config = synthetic_target_config("global,face")
    config.mode = "transfer"
    with pytest.raises(EdnError, match="transfer.model_workdir is empty"):
        main.run(config, str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    config.transfer.model_workdir = str(tmp_path / "empty")
    with pytest.raises(EdnError, match="has no checkpoints directory"):
        main.run(config, str(tmp_path / "out"))
    (tmp_path / "empty" / "checkpoints").mkdir()
    with pytest.raises(EdnError, match="holds no checkpoint"):
        main.run(config, str(tmp_path / "out"))
    assert not list((tmp_path / "out").glob("*.mp4"))  # (a workdir the refused runs created is gone again)


@pytest.mark.slow
def test_missing_model_on_the_command_line(tmp_path):
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "edn_jax.main", "--config=configs/transfer.py",
                           f"--workdir={tmp_path / 'out'}", f"--config.transfer.model_workdir={tmp_path / 'empty'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no checkpoints directory" in errors[0] and "Traceback" not in proc.stderr


def test_existing_output_is_refused_unless_overwrite(synthetic_target, tmp_path):
    config = transfer_config(synthetic_target, synthetic_frames=4)
    workdir = str(tmp_path / "out")
    main.run(config, workdir)
    path = os.path.join(workdir, "synthetic_seed1.mp4")
    stamp = os.stat(path).st_mtime_ns
    with pytest.raises(EdnError, match="overwrite=True"):
        main.run(config, workdir)
    assert os.stat(path).st_mtime_ns == stamp
    config.overwrite = True
    config.transfer.synthetic_frames = 6
    main.run(config, workdir)
    assert len(decode(path)) == 6


def _keypoint_file(path, seed, frames):
    kps = synthetic.synthetic_keypoints(seed, frames, SIZE, SIZE)
    pipeline.save_keypoints(str(path), pipeline.PoseSequence(kps, kps, 30.0, SIZE, SIZE, f"synthetic:{seed}"))
    return kps


def test_batch_renders_the_good_sources_and_lists_the_failures(synthetic_target, tmp_path, monkeypatch):
    folder = tmp_path / "sources"
    folder.mkdir()
    _keypoint_file(folder / "alpha.npz", 5, 10)
    _keypoint_file(folder / "beta.npz", 6, 7)
    _keypoint_file(folder / "done.npz", 7, 5)
    (folder / "broken.mp4").write_text("not a video\n")
    (folder / "list.txt").write_text("# tonight's batch\nalpha.npz\nbroken.mp4\n\nbeta.npz\ndone.npz\n")
    workdir = tmp_path / "out"
    workdir.mkdir()
    (workdir / "done.mp4").write_bytes(b"rendered yesterday")
    config = transfer_config(synthetic_target, source=f"@{folder / 'list.txt'}", batch_videos=2, chunk_frames=4)

    written = spy_on_writes(monkeypatch)
    with pytest.raises(EdnError) as caught:
        main.run(config, str(workdir))
    assert_facts(caught.value, "1 of 4 sources failed", "broken.mp4", "cannot read")
    assert sorted(os.listdir(workdir)) == ["alpha.mp4", "beta.mp4", "done.mp4", "transfer_summary.json"]
    assert (workdir / "done.mp4").read_bytes() == b"rendered yesterday"
    assert len(decode(str(workdir / "beta.mp4"))) == 7
    alpha = decode(str(workdir / "alpha.mp4"))
    target = load_target(config)
    spec = sources.SourceSpec("alpha", "keypoints", str(folder / "alpha.npz"))
    expected, _ = reference_render(target, sources.prepare_source(config, spec, SIZE, SIZE, target.stats).keypoints)
    assert len(alpha) == 10 and mean_abs(alpha, through_codec(expected, 30.0, tmp_path)) < 5.0  # codec noise
    assert np.abs(np.stack(written["alpha.mp4"]).astype(int) - expected.astype(int)).max() <= 1  # before the codec
    status = {s["name"]: s["status"] for s in json.load(open(workdir / "transfer_summary.json"))["sources"]}
    assert status == {"alpha": "rendered", "broken": "failed", "beta": "rendered", "done": "skipped"}

    # Rerun: the finished videos are skipped, only the broken source fails again.
    with pytest.raises(EdnError, match="1 of 4 sources failed"):
        main.run(config, str(workdir))
    status = {s["name"]: s["status"] for s in json.load(open(workdir / "transfer_summary.json"))["sources"]}
    assert status == {"alpha": "skipped", "broken": "failed", "beta": "skipped", "done": "skipped"}


# ----------------------------------------------------------------------------- interruptions


def _fail_on_write(monkeypatch, error, after, cls=video.SegmentedVideoWriter, method="write_chunk"):
    """Counts calls of ``cls.method``; the one after ``after`` calls raises ``error``."""
    calls = {"n": 0}
    original = getattr(cls, method)

    def wrapped(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapped)
    return calls


def visible(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def test_interrupted_render_resumes_from_its_last_chunk_with_the_same_bytes(synthetic_target, tmp_path, monkeypatch,
                                                                             capsys):
    """Ctrl-C (or kill -9, or preemption) in the middle of a video loses at most the chunk in flight:
    the rerun of the same command continues from the last complete chunk (its segments, the slot's
    carry) and writes exactly the bytes of an uninterrupted render; no output appears before that."""
    config = transfer_config(synthetic_target, synthetic_frames=20, chunk_frames=4, side_by_side=True)
    names = ["synthetic_seed1.mp4", "synthetic_seed1_side_by_side.mp4"]
    straight = str(tmp_path / "straight")
    main.run(config, straight)
    reference = {name: open(os.path.join(straight, name), "rb").read() for name in names}
    assert not os.path.exists(os.path.join(straight, ".transfer_partial"))  # removed once the video is done

    workdir = str(tmp_path / "out")
    calls = _fail_on_write(monkeypatch, KeyboardInterrupt(), after=4)  # chunks 1 and 2 (video + side by side)
    with pytest.raises(KeyboardInterrupt):
        main.run(config, workdir)
    assert calls["n"] == 5 and visible(workdir) == []  # no video, no summary
    state = json.load(open(os.path.join(workdir, ".transfer_partial", "synthetic_seed1", "state.json")))
    assert state["frames"] == 8 and state["segments"] == {"video": [4, 4], "side_by_side": [4, 4]}

    # Killed between a chunk's segments and its state: the rerun drops the unrecorded segment.
    monkeypatch.undo()
    calls = _fail_on_write(monkeypatch, KeyboardInterrupt(), after=0, cls=render_resume.ResumeState, method="save")
    with pytest.raises(KeyboardInterrupt):
        main.run(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, ".transfer_partial", "synthetic_seed1", "video"))) == [
        "000000.mp4", "000001.mp4", "000002.mp4"]  # chunk 3 encoded, not recorded

    monkeypatch.undo()
    capsys.readouterr()
    encoded = _fail_on_write(monkeypatch, None, after=10 ** 6)
    main.run(config, workdir)
    assert "resuming synthetic_seed1 at frame 9 of 20" in capsys.readouterr().out
    assert encoded["n"] == 2 * 3  # chunks 3, 4 and 5 only
    for name in names:
        assert open(os.path.join(workdir, name), "rb").read() == reference[name], name
    assert visible(workdir) == sorted(names + ["report", "transfer_summary.json"])  # the page only once it ends
    assert not os.path.exists(os.path.join(workdir, ".transfer_partial"))

    # A failure inside the loop: the source is reported as failed, no output appears.
    monkeypatch.undo()
    _fail_on_write(monkeypatch, RuntimeError("disk on fire"), after=3)
    with pytest.raises(EdnError, match="RuntimeError: disk on fire"):
        main.run(config, str(tmp_path / "failing"))
    assert visible(tmp_path / "failing") == ["transfer_summary.json"]


def test_a_resumed_self_score_equals_an_uninterrupted_one():
    class Detector:  # a known detector: frame brightness decides the keypoints
        def detect(self, frame):
            return np.full((137, 3), float(frame.mean()), np.float32)

        def close(self):
            pass

    rng = np.random.default_rng(0)
    outputs, sources = (rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    labels = np.zeros((12, 16, 16, 3), np.uint8)
    labels[::2, 2:6, 2:6] = 255  # a figure on every other frame
    straight = SelfScore(Detector(), 0, 16, Detector())
    straight.add(outputs, sources, labels)
    first = SelfScore(Detector(), 0, 16, Detector())
    first.add(outputs[:5], sources[:5], labels[:5])
    resumed = SelfScore(Detector(), 0, 16, Detector())
    resumed.restore({k: np.array(v) for k, v in first.state().items()})
    resumed.add(outputs[5:], sources[5:], labels[5:])
    drawn = np.full((12, 137, 3), 100.0, np.float32)
    assert resumed.summary(drawn) == straight.summary(drawn)
    assert straight.summary(drawn)["people"]["frames_with_figure"] == 6
    np.testing.assert_array_equal(np.stack(resumed.detected), np.stack(straight.detected))


class _Blobs:
    """A detector that sees white squares as people: the largest one, as 25 body points on it."""

    def detect(self, frame):
        white = (frame == 255).all(axis=-1)
        count, ids, stats, centres = cv2.connectedComponentsWithStats(white.astype(np.uint8))
        if count < 2:
            return None
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        ys, xs = np.nonzero(ids == biggest)
        pose = np.zeros((layout.NUM_KEYPOINTS, 3), np.float32)
        pick = np.linspace(0, len(xs) - 1, layout.NUM_BODY).astype(int)
        pose[layout.BODY, 0], pose[layout.BODY, 1], pose[layout.BODY, 2] = xs[pick], ys[pick], 1.0
        return pose

    def close(self):
        pass


def test_the_people_check_finds_the_asked_body_at_its_figure_and_anybody_else_elsewhere():
    """The second-person check: the asked figure's region (dilated by 6% of the frame height) is
    painted grey and the detector looks again; anybody it finds is a second person."""
    frames = np.zeros((4, 64, 64, 3), np.uint8)
    labels = np.zeros((4, 64, 64, 3), np.uint8)
    labels[:2, 10:51, 15] = 200                  # frames 0-1 ask for a figure: a line at x = 15
    frames[:2, 20:31, 13:18] = 255               # the asked body, on its figure
    frames[1:3, 20:31, 40:51] = 255              # frames 1-2: a larger second body elsewhere
    score = SelfScore(_Blobs(), 0, 64, _Blobs())  # frame 3: nobody and no figure
    score.add(frames, None, labels)
    assert score.people == {"found": [True, False, False, False], "second": [False, True, True, False],
                            "has_figure": [True, True, False, False]}
    counts = people_counts(*score.people_arrays())
    assert counts["asked_body_found_rate"] == 0.5 and counts["second_person_rate"] == 0.5
    assert counts["frames_with_figure"] == 2 and counts["second_person_frames"] == 2
    region = asked_region(labels[0])
    assert region[30, 15] and region[30, 19] and not region[30, 21] and not region[30, 40]


# ----------------------------------------------------------------------------- real footage


def test_real_footage_transfer_stands_on_the_target_floor(cam01_target, tmp_path_factory):
    """A tiny model of single_person_cam01 driven by the person tracked in two_people_cam01."""
    config, model_dir = copy.deepcopy(cam01_target[0]), cam01_target[1]
    config.mode = "transfer"
    config.transfer.model_workdir = model_dir
    config.transfer.source = real_video("two_people_cam01.mp4")
    config.input.max_frames = 20
    workdir = str(tmp_path_factory.mktemp("real_out"))
    main.run(config, workdir)
    out = os.path.join(workdir, "two_people_cam01.mp4")
    assert len(decode(out)) == 20 and abs(video.probe_video(out).fps - 60.0) < 0.1
    # It scored itself with the real detector: a distance or a full miss, and the source video's jitter.
    (entry,) = json.load(open(os.path.join(workdir, "transfer_summary.json")))["sources"]
    pose = entry["self_score"]["pose"]
    assert 0.0 <= pose["overall_missed_rate"] <= 1.0
    assert pose["overall_distance"] is not None or pose["overall_missed_rate"] == 1.0
    assert entry["self_score"]["frame_jitter"]["source"] > 0

    target = load_target(config)
    source = sources.prepare_source(config, sources.resolve_sources(config)[0], target.height, target.width,
                                    target.stats)
    stats = target.stats
    tolerance = 0.05 * 0.5 * float(stats.height_far + stats.height_close)
    ankle, ok = normalization.frame_ankle_y(jnp.asarray(source.keypoints))
    ankle = np.asarray(ankle)[np.asarray(ok)]
    assert len(ankle) >= 15
    assert ankle.min() >= float(stats.ankle_far) - tolerance, (ankle.min(), stats)
    assert ankle.max() <= float(stats.ankle_close) + tolerance, (ankle.max(), stats)
    # Without normalization the source would stand elsewhere: the check above is not vacuous.
    raw_ankle, raw_ok = normalization.frame_ankle_y(jnp.asarray(source.source_keypoints))
    raw_ankle = np.asarray(raw_ankle)[np.asarray(raw_ok)]
    assert (raw_ankle.max() > float(stats.ankle_close) + tolerance
            or raw_ankle.min() < float(stats.ankle_far) - tolerance)
    # ... and has the target's body height there.
    height, height_ok = normalization.frame_height(jnp.asarray(source.keypoints))
    height = float(np.median(np.asarray(height)[np.asarray(height_ok)]))
    assert abs(height - 0.5 * float(stats.height_far + stats.height_close)) < 0.1 * height


class _Drawn:
    """A detector that answers, frame after frame, the poses it was asked to draw shifted by (3, 4) px."""

    def __init__(self, poses):
        self.answers, self.closed = list(poses), False

    def detect(self, frame):
        kps = self.answers.pop(0)
        if kps is None:  # nobody
            return None
        kps = kps.copy()
        kps[:, :2] += np.float32([3, 4]) * (kps[:, 2:] > 0)
        return kps

    def close(self):
        self.closed = True


def test_transfer_scores_itself_against_the_poses_it_drew(synthetic_target, tmp_path, monkeypatch, capsys):
    config = transfer_config(synthetic_target, synthetic_frames=6, chunk_frames=4, detect_min_side=0, self_score=True)
    target = load_target(config)
    drawn = sources.prepare_source(config, sources.resolve_sources(config)[0], SIZE, SIZE, target.stats).keypoints
    made = []  # the scorer's detectors: the first sees the output, the second the output with the figure greyed

    def make(pose):
        made.append(_Drawn(drawn) if not made else _Drawn([None] * len(drawn)))
        return made[-1]

    monkeypatch.setattr(self_score.pose_detector, "from_config", make)
    written = spy_on_writes(monkeypatch)
    main.run(config, str(tmp_path / "out"))
    summary = json.load(open(tmp_path / "out" / "transfer_summary.json"))
    score = summary["sources"][0]["self_score"]
    assert len(made) == 2 and all(d.closed and not d.answers for d in made)  # one call per frame each
    people = score["people"]
    assert people["frames"] == 6 and people["second_person_frames"] == 0 and people["second_person_rate"] == 0.0
    assert summary["self_score"]["people"]["second_person_rate"] == 0.0
    for part in ("body", "face", "hands", "overall"):
        assert score["pose"][f"{part}_distance"] == pytest.approx(5.0, abs=1e-4)
        assert score["pose"][f"{part}_missed_rate"] == 0.0
    assert score["pose_paper"]["body_distance"] == pytest.approx(5.0 * 512 / SIZE, abs=1e-3)
    frames = np.stack(written["synthetic_seed1.mp4"]).astype(np.float32)  # what the encoder was given
    assert score["frame_jitter"]["output"] == pytest.approx(float(np.abs(np.diff(frames, axis=0)).mean()), rel=1e-5)
    assert score["frame_jitter"]["source"] > 0 and score["frame_jitter"]["source"] != score["frame_jitter"]["output"]
    assert summary["self_score"]["videos"] == 1
    assert summary["self_score"]["pose"]["overall_distance"] == pytest.approx(5.0, abs=1e-4)
    out = capsys.readouterr().out
    assert_facts(out, "self score", "pose distance 5.00 px", "0% missed", "batch (1 video(s))",
                 "a second person in 0% of frames")


def test_self_score_with_the_real_detector_and_a_source_without_frames(synthetic_target, tmp_path):
    """A pose file without its video: the output is scored by MediaPipe, the source has no frame jitter."""
    path = tmp_path / "moves.npz"
    kps = synthetic.synthetic_keypoints(8, 6, SIZE, SIZE)
    gone = str(tmp_path / "deleted_since.mp4")  # pose mode's video, no longer there: poses without frames
    pipeline.save_keypoints(str(path), pipeline.PoseSequence(kps, kps, 30.0, SIZE, SIZE, gone))
    config = transfer_config(synthetic_target, source=str(path), chunk_frames=4, self_score=True)
    main.run(config, str(tmp_path / "out"))
    (entry,) = json.load(open(tmp_path / "out" / "transfer_summary.json"))["sources"]
    score = entry["self_score"]
    assert 0.0 <= score["pose"]["overall_missed_rate"] <= 1.0 and score["frame_jitter"]["source"] is None
    assert score["frame_jitter"]["output"] > 0
    config.transfer.self_score, config.overwrite = False, True
    main.run(config, str(tmp_path / "out"))
    assert json.load(open(tmp_path / "out" / "transfer_summary.json"))["sources"][0]["self_score"] == {}
