"""Transfer mode: the compiled scan against a per-frame loop, batched chunked rendering, videos end to
end (frames, fps, audio, side by side, no-person frames), refusals, batch failures, interruptions,
and real footage normalized onto the target's floor."""

import copy
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, real_video
from configs import default, tiny
from edn_jax import inference, main, synthetic, train, transfer, video
from edn_jax.errors import EdnError
from edn_jax.pose import layout, normalization, pipeline, render

SIZE = 64


def tiny_config(stages="global,face"):
    """configs/tiny.py at 64x64 with one 1-layer discriminator and one step per stage."""
    config = tiny.get_config()
    config.train.stages = stages
    config.model.n_layers_d, config.model.num_d = 1, 1
    config.loss.lambda_l1 = 10.0
    config.train.height = config.train.width = SIZE
    config.train.num_steps, config.train.decay_steps = 1, 0
    config.train.face.num_steps, config.train.face.decay_steps, config.train.face.d_alone_steps = 1, 0, 1
    config.train.log_every = config.train.sample_every = config.train.checkpoint_every = 1
    config.train.evaluate_holdout = False
    config.synthetic.height = config.synthetic.width = SIZE
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, model workdir) of a tiny global+face model trained on the synthetic subject."""
    config = tiny_config()
    workdir = str(tmp_path_factory.mktemp("target"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


def transfer_config(trained, **fields):
    base, workdir = trained
    config = copy.deepcopy(base)
    config.mode = "transfer"
    config.transfer.model_workdir = workdir
    for key, value in fields.items():
        config.transfer[key] = value
    return config


def to_unit(u8):
    return u8.astype(np.float32) / 127.5 - 1.0


def reference_render(target, keypoints):
    """The whole sequence in one render_chunk call, as uint8."""
    h, w = target.height, target.width
    labels = render.render_stick_figures(keypoints, h, w)
    boxes, valid = render.face_boxes(keypoints, h, w)
    out, _ = inference.render_chunk(target.model.renderer, target.model.params, jnp.asarray(to_unit(labels)),
                                    jnp.asarray(boxes), jnp.asarray(valid), inference.initial_carry(h, w))
    return np.asarray(transfer.to_uint8(out)), labels


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


# ----------------------------------------------------------------------------- rendering


def test_scan_matches_a_per_frame_python_loop(trained):
    config = transfer_config(trained, synthetic_frames=7)
    target = transfer.load_target(config)
    renderer, params = target.model.renderer, target.model.params
    assert renderer.has_face
    source = transfer.prepare_source(config, transfer.resolve_sources(config)[0], target)
    labels = to_unit(render.render_stick_figures(source.keypoints, SIZE, SIZE))
    boxes, valid = render.face_boxes(source.keypoints, SIZE, SIZE)
    assert valid.all()

    scanned, carry = inference.render_chunk(renderer, params, jnp.asarray(labels), jnp.asarray(boxes),
                                            jnp.asarray(valid), inference.initial_carry(SIZE, SIZE))
    prev = prev_label = jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
    looped = []
    for t in range(len(labels)):  # one frame at a time, no scan and no jit
        label = jnp.asarray(labels[t:t + 1])
        out = renderer.generator.apply({"params": params["g"]},
                                       inference.generator_input(label, prev, prev_label, renderer.use_prev_label))
        looped.append(inference.refine_faces(renderer, params["face"], out, label, boxes[t:t + 1], valid[t:t + 1])[0])
        prev, prev_label = out, label
    np.testing.assert_allclose(np.asarray(scanned), np.stack(looped), atol=1e-4)
    np.testing.assert_allclose(np.asarray(carry[0]), np.asarray(prev), atol=1e-4)
    # The face residual is applied: without it the face crops differ.
    plain, _ = inference.render_chunk(renderer, params, jnp.asarray(labels), jnp.asarray(boxes), jnp.asarray(valid),
                                      inference.initial_carry(SIZE, SIZE), apply_face=False)
    assert np.abs(np.asarray(plain) - np.asarray(scanned)).max() > 1e-3
    # Each frame depends on the previous output: frame 1 rendered from a blank previous frame differs.
    alone, _ = inference.render_chunk(renderer, params, jnp.asarray(labels[1:2]), jnp.asarray(boxes[1:2]),
                                      jnp.asarray(valid[1:2]), inference.initial_carry(SIZE, SIZE))
    assert np.abs(np.asarray(alone[0]) - np.asarray(scanned[1])).max() > 1e-3


def test_batched_chunks_match_whole_sequence_renders(trained, monkeypatch):
    """Two slots, chunks of 4 with padded tails, a third video taking over a slot: each video's
    frames equal one render_chunk call over the whole sequence, from one compilation."""
    config = transfer_config(trained)
    target = transfer.load_target(config)
    traces, render_chunk = [], inference.render_chunk

    def counted(*args, **kwargs):  # runs only while render_batch is traced
        traces.append(1)
        return render_chunk(*args, **kwargs)

    monkeypatch.setattr(inference, "render_chunk", counted)
    lengths = {"a": 9, "b": 5, "c": 6}
    kps = {name: synthetic.synthetic_keypoints(seed, n, SIZE, SIZE) for seed, (name, n) in
           enumerate(lengths.items(), 2)}
    batch = transfer.BatchRenderer(target.model, slots=2, chunk=4)
    assert len(batch.mesh.devices.flat) == 2  # the two videos are sharded over two devices
    queue, slots, got = list(kps), [None, None], {k: [] for k in kps}
    pos = {}
    while queue or any(slots):
        reset = np.zeros(2, bool)
        for i in range(2):
            if slots[i] is None and queue:
                slots[i], pos[queue[0]], reset[i] = queue[0], 0, True
                queue.pop(0)
        labels = np.zeros((2, 4, SIZE, SIZE, 3), np.uint8)
        boxes, valid, used = np.zeros((2, 4, 4), np.float32), np.zeros((2, 4), bool), [0, 0]
        for i, name in enumerate(slots):
            if name is None:
                continue
            chunk = kps[name][pos[name]:pos[name] + 4]
            used[i] = len(chunk)
            chunk = np.concatenate([chunk, chunk[[-1] * (4 - len(chunk))]])
            labels[i] = render.render_stick_figures(chunk, SIZE, SIZE)
            boxes[i], valid[i] = render.face_boxes(chunk, SIZE, SIZE)
        out = batch(labels, boxes, valid, reset)
        for i, name in enumerate(slots):
            if name is None:
                continue
            got[name].append(out[i, :used[i]])
            pos[name] += used[i]
            if pos[name] >= lengths[name]:
                slots[i] = None
    monkeypatch.undo()
    assert len(traces) <= 1  # 4 calls, 3 videos, a slot refilled: traced (and compiled) at most once
    for name, keypoints in kps.items():
        expected, _ = reference_render(target, keypoints)
        frames = np.concatenate(got[name])
        assert frames.shape == expected.shape
        assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1  # float rounding at most


# ----------------------------------------------------------------------------- end to end


def spy_on_writes(monkeypatch):
    """{output path: frames handed to the encoder}, recorded as transfer writes them."""
    written, original = {}, transfer.OutputVideo.write

    def write(self, frame):
        written.setdefault(os.path.basename(self.path), []).append(np.array(frame))
        original(self, frame)

    monkeypatch.setattr(transfer.OutputVideo, "write", write)
    return written


def test_synthetic_transfer_end_to_end(trained, tmp_path, monkeypatch, capsys):
    config = transfer_config(trained, synthetic_seed=3, synthetic_frames=20, chunk_frames=8, side_by_side=True)
    config.synthetic.fps = 24.0
    workdir = str(tmp_path / "out")
    written = spy_on_writes(monkeypatch)
    main.run(config, workdir)
    progress = capsys.readouterr().err
    assert "rendering 1 video(s) with the face model: 20/20 (100%)" in progress and "frames/s" in progress
    assert sorted(os.listdir(workdir)) == ["synthetic_seed3.mp4", "synthetic_seed3_side_by_side.mp4",
                                           "transfer_summary.json"]
    path = os.path.join(workdir, "synthetic_seed3.mp4")
    info = video.probe_video(path)
    assert abs(info.fps - 24.0) < 1e-3 and (info.height, info.width) == (SIZE, SIZE)
    frames = decode(path)
    assert len(frames) == 20

    # The poses: the synthetic dancer fit into the model frame and normalized to the target's statistics.
    from edn_jax import dataset

    target = transfer.load_target(config)
    split = dataset.open_split(json.load(open(os.path.join(trained[1], "train_summary.json")))["dataset"], "train")
    raw = synthetic.synthetic_keypoints(3, 20, SIZE, SIZE, 24.0)
    expected_kps = np.asarray(normalization.normalize_sequence(raw, normalization.pose_statistics(raw), split.stats))
    source = transfer.prepare_source(config, transfer.resolve_sources(config)[0], target)
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
    import cv2
    import imageio_ffmpeg

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
    assert transfer.has_audio(clip)
    return clip


def test_real_video_source_keeps_audio_and_fills_frames_without_a_person(trained, tmp_path):
    clip = _clip_with_gaps_and_audio(tmp_path)
    config = transfer_config(trained, source=clip, chunk_frames=8)
    workdir = str(tmp_path / "out")
    main.run(config, workdir)
    out = os.path.join(workdir, "dancer.mp4")
    assert transfer.has_audio(out)
    assert len(decode(out)) == 12 and abs(video.probe_video(out).fps - 30.0) < 1e-3
    (entry,) = json.load(open(os.path.join(workdir, "transfer_summary.json")))["sources"]
    assert entry["audio"] and entry["frames"] == 12
    # Frames 5-6 lie between detections (gap fill); 0 and 11 are at the ends (held).
    assert (entry["frames_without_person"], entry["interpolated"], entry["held"]) == (4, 2, 2)
    assert sorted(os.listdir(workdir)) == ["dancer.mp4", "transfer_summary.json"]


def test_hold_nearest_pose():
    kps = np.zeros((7, layout.NUM_KEYPOINTS, 3), np.float32)
    for t in (2, 3, 6):
        kps[t, :, :2], kps[t, :, 2] = t, 1.0
    filled, held = transfer.hold_nearest_pose(kps)
    assert held.tolist() == [True, True, False, False, True, True, False]
    # Frames 0-1 take frame 2 (the first pose), 4 the nearer 3, 5 the nearer 6.
    assert [int(f[0, 0]) for f in filled] == [2, 2, 2, 3, 3, 6, 6]
    with pytest.raises(EdnError, match="no person in any of the 7 frames"):
        transfer.hold_nearest_pose(np.zeros_like(kps))


def test_stats_in_frame_match_statistics_of_moved_poses():
    kps = synthetic.synthetic_keypoints(4, 60, 96, 64)
    tf = render.fit_transform((96, 64), (128, 256), "pad")
    mapped = transfer.stats_in_frame(normalization.pose_statistics(kps), tf)
    direct = normalization.pose_statistics(render.transform_keypoints(kps, tf))
    for name, a, b in zip(normalization.PoseStats._fields, mapped, direct):
        assert abs(float(a) - float(b)) < 0.05 * max(1.0, abs(float(b))), name


# ----------------------------------------------------------------------------- refusals and failures


def test_missing_model_is_refused(tmp_path):
    config = tiny_config()
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
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".mp4")]


def test_missing_model_on_the_command_line(tmp_path):
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "edn_jax.main", "--config=configs/transfer.py",
                           f"--workdir={tmp_path / 'out'}", f"--config.transfer.model_workdir={tmp_path / 'empty'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no checkpoints directory" in errors[0] and "Traceback" not in proc.stderr


def test_existing_output_is_refused_unless_overwrite(trained, tmp_path):
    config = transfer_config(trained, synthetic_frames=4)
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


def test_batch_renders_the_good_sources_and_lists_the_failures(trained, tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    _keypoint_file(sources / "alpha.npz", 5, 10)
    _keypoint_file(sources / "beta.npz", 6, 7)
    _keypoint_file(sources / "done.npz", 7, 5)
    (sources / "broken.mp4").write_text("not a video\n")
    (sources / "list.txt").write_text("# tonight's batch\nalpha.npz\nbroken.mp4\n\nbeta.npz\ndone.npz\n")
    workdir = tmp_path / "out"
    workdir.mkdir()
    (workdir / "done.mp4").write_bytes(b"rendered yesterday")
    config = transfer_config(trained, source=f"@{sources / 'list.txt'}", batch_videos=2, chunk_frames=4)

    with pytest.raises(EdnError, match=r"1 of 4 sources failed: .*broken\.mp4 \(cannot read"):
        main.run(config, str(workdir))
    assert sorted(os.listdir(workdir)) == ["alpha.mp4", "beta.mp4", "done.mp4", "transfer_summary.json"]
    assert (workdir / "done.mp4").read_bytes() == b"rendered yesterday"
    assert len(decode(str(workdir / "beta.mp4"))) == 7
    alpha = decode(str(workdir / "alpha.mp4"))
    target = transfer.load_target(config)
    expected, _ = reference_render(target, transfer.prepare_source(
        config, transfer.SourceSpec("alpha", "keypoints", str(sources / "alpha.npz")), target).keypoints)
    assert len(alpha) == 10 and mean_abs(alpha, through_codec(expected, 30.0, tmp_path)) < 4.0
    status = {s["name"]: s["status"] for s in json.load(open(workdir / "transfer_summary.json"))["sources"]}
    assert status == {"alpha": "rendered", "broken": "failed", "beta": "rendered", "done": "skipped"}

    # Rerun: the finished videos are skipped, only the broken source fails again.
    with pytest.raises(EdnError, match="1 of 4 sources failed"):
        main.run(config, str(workdir))
    status = {s["name"]: s["status"] for s in json.load(open(workdir / "transfer_summary.json"))["sources"]}
    assert status == {"alpha": "skipped", "broken": "failed", "beta": "skipped", "done": "skipped"}


def test_sources_from_globs_lists_and_names(tmp_path):
    config = default.get_config()
    for name in ("b.mp4", "a.mp4", "c.txt"):
        (tmp_path / name).write_text("x")
    config.transfer.source = str(tmp_path / "*.mp4")
    assert [s.name for s in transfer.resolve_sources(config)] == ["a", "b"]
    pose_dir = tmp_path / "pose_cam01"
    pose_dir.mkdir()
    config.transfer.source = f"{tmp_path / 'a.mp4'}, {pose_dir / 'keypoints.npz'}"
    assert [(s.name, s.kind) for s in transfer.resolve_sources(config)] == [("a", "video"), ("pose_cam01", "keypoints")]
    (tmp_path / "list.txt").write_text("# relative to the list\nb.mp4\n\npose_cam01\n")
    config.transfer.source = f"@{tmp_path / 'list.txt'}"
    specs = transfer.resolve_sources(config)
    assert [(s.name, s.kind, s.path) for s in specs] == [("b", "video", str(tmp_path / "b.mp4")),
                                                         ("pose_cam01", "openpose", str(pose_dir))]
    config.transfer.source = str(tmp_path / "*.avi")
    with pytest.raises(EdnError, match="matches no file"):
        transfer.resolve_sources(config)
    config.transfer.source = f"@{tmp_path / 'missing.txt'}"
    with pytest.raises(EdnError, match="source list not found"):
        transfer.resolve_sources(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.mp4").write_text("x")
    config.transfer.source = f"{tmp_path / 'a.mp4'},{tmp_path / 'other' / 'a.mp4'}"
    with pytest.raises(EdnError, match="would both write a.mp4"):
        transfer.resolve_sources(config)
    config.transfer.source = ""
    assert [(s.name, s.kind) for s in transfer.resolve_sources(config)] == [("synthetic_seed1", "synthetic")]


# ----------------------------------------------------------------------------- interruptions


def _fail_on_write(monkeypatch, error, after):
    calls = {"n": 0}
    original = transfer.OutputVideo.write

    def write(self, frame):
        calls["n"] += 1
        if calls["n"] > after:
            raise error
        original(self, frame)

    monkeypatch.setattr(transfer.OutputVideo, "write", write)
    return calls


def test_interrupted_render_leaves_no_file(trained, tmp_path, monkeypatch):
    config = transfer_config(trained, synthetic_frames=20, chunk_frames=4, side_by_side=True)
    workdir = str(tmp_path / "out")
    calls = _fail_on_write(monkeypatch, KeyboardInterrupt(), after=17)
    with pytest.raises(KeyboardInterrupt):
        main.run(config, workdir)
    assert calls["n"] == 18  # stopped midway, after frames were encoded
    assert os.listdir(workdir) == []  # no video, no partial file, no summary

    monkeypatch.undo()
    # A failure inside the loop: the source is reported as failed, its partial outputs removed.
    calls = _fail_on_write(monkeypatch, RuntimeError("disk on fire"), after=9)
    with pytest.raises(EdnError, match="RuntimeError: disk on fire"):
        main.run(config, workdir)
    assert os.listdir(workdir) == ["transfer_summary.json"]


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

    target = transfer.load_target(config)
    source = transfer.prepare_source(config, transfer.resolve_sources(config)[0], target)
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
