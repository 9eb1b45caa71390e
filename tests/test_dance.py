"""Dance mode (edn_jax.dance): its choices as pure functions, and the one command as a user runs it,
killed with SIGKILL in each phase and run again, and with each bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ONE_DEVICE_XLA_FLAGS, REPO, assert_facts, assert_one_line_error, real_video
from edn_jax import dance, filenames
from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.runtime import video

# configs/dance.py with tiny networks at 64 px on the first 24 frames of the target and the source
TINY = ["--config.model.ngf=8", "--config.model.n_downsampling=2", "--config.model.n_blocks=1",
        "--config.model.ndf=8", "--config.model.n_layers_d=1", "--config.model.num_d=1", "--config.loss.perceptual=none",
        "--config.dance.long_side=64", "--config.input.max_frames=24", "--config.train.log_every=2",
        "--config.train.sample_every=2", "--config.train.checkpoint_every=2", "--config.evaluate.pose_distance=False",
        "--config.transfer.self_score=False", "--config.transfer.chunk_frames=8"]
STEPS = ["--config.dance.train_minutes=0", "--config.train.num_steps=6", "--config.train.decay_steps=3"]


def command(workdir, *extra, target="single_person_cam01.mp4", source=None):
    source = source or real_video("single_person_cam02.mp4")
    return [sys.executable, "-m", "edn_jax.main", "--config", "configs/dance.py", f"--workdir={workdir}",
            f"--config.dance.target={real_video(target) if os.sep not in target else target}",
            f"--config.dance.source={source}", *TINY, *extra]


def environment():
    return dict(os.environ, XLA_FLAGS=ONE_DEVICE_XLA_FLAGS)  # one CPU device, as a user has


def run(argv, timeout=600):
    return subprocess.run(argv, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=timeout)


def run_and_kill(argv, phase: str, when) -> str:
    """Runs ``argv`` and kills it with SIGKILL once ``when(workdir)`` holds after ``phase`` started;
    returns its output. Fails if the run ended by itself first."""
    workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
    proc = subprocess.Popen(argv, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("dance: phase") and line.rstrip().endswith(f"{phase} ..."):
            break
    deadline = time.monotonic() + 300
    while not when(workdir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    output = "".join(lines) + rest
    assert proc.returncode == -signal.SIGKILL, output[-3000:]
    return output


def finished_phases(workdir) -> set:
    path = os.path.join(workdir, filenames.DANCE_STATE)
    return set(json.load(open(path))["phases"]) if os.path.exists(path) else set()


def decoded(path):
    return np.stack(list(video.iter_frames(path)))


def scores(workdir):
    metrics = json.load(open(os.path.join(workdir, "evaluation", "global", "metrics.json")))
    return {k: v for k, v in metrics.items() if k not in ("model_workdir", "outputs", "dataset")}  # paths


# --- pure choices ---------------------------------------------------------------------------------

def test_the_frame_size_follows_the_displayed_aspect_with_the_long_side_given():
    assert dance.frame_size(1920, 1080, 192) == (192, 112)  # a phone held upright: 108 rounds to 112
    assert dance.frame_size(1080, 1920, 192) == (112, 192)  # landscape
    assert dance.frame_size(480, 640, 256) == (192, 256)
    assert dance.frame_size(500, 500, 128) == (128, 128)
    assert dance.frame_size(4000, 100, 64) == (64, 16)      # never below one multiple


def test_the_steps_fill_the_budget_from_the_measured_rate():
    # 10 probe steps took 40 s at 2 steps/s after compiling: 35 s of setup, paid again on resuming
    steps, decay = dance.plan_steps(600.0, 0, 10, 40.0, 2.0, 0.5)
    assert steps == 10 + int((600 - 40 - 35) * 2.0) == 1060
    assert decay == 530
    # the decay never reaches back into the probe's constant-rate steps
    steps, decay = dance.plan_steps(80.0, 0, 10, 40.0, 2.0, 0.5)
    assert (steps, decay) == (20, 10)
    steps, decay = dance.plan_steps(82.0, 0, 10, 40.0, 2.0, 0.9)
    assert steps == 24 and decay == 14
    with pytest.raises(EdnError, match="too short"):
        dance.plan_steps(30.0, 0, 10, 40.0, 2.0, 0.5)  # compiling alone takes 35 s


def test_the_probes_rate_leaves_out_compilation_the_warm_up_and_a_slow_moment():
    # step 1 dispatched at t=0 after compiling; its batch and the next were prefetched while compiling
    # (0.1 s each), the next 48 steps warm up (1.5 s each), then every step takes 0.8 s but for steps
    # 71-80 (something else ran: 2 s each); the progress rate is logged, synced, every 10 steps
    done = np.cumsum([0.1, 0.1] + [1.5] * 48 + [0.8] * 20 + [2.0] * 10 + [0.8] * 20)  # step c's result is ready
    counts = np.arange(10, 101, 10)
    logged = (counts - 1) / done[counts - 1]    # what the progress bar reports
    assert dance.steady_rate(counts, logged, warm_up=50) == pytest.approx(1.25)
    assert logged[-1] < 0.9                     # the rate since the first step is far off
    with pytest.raises(EdnError, match="too few"):
        dance.steady_rate(counts[:5], logged[:5], warm_up=50)


def test_the_face_counts_as_seen_only_where_its_landmarks_were_found():
    kps = np.zeros((10, layout.NUM_KEYPOINTS, 3), np.float32)
    kps[:8, layout.BODY, 2] = 1.0            # a person in 8 frames; the head's points alone are no face
    kps[:2, layout.FACE, 2] = 1.0
    assert dance.face_seen(kps) == pytest.approx(0.25)
    kps[8:, layout.FACE, 2] = 1.0            # a face without a body does not count
    assert dance.face_seen(kps) == pytest.approx(0.25)


def test_each_stage_is_planned_from_its_share_and_trained_before_the_next_is_timed(tmp_path, monkeypatch):
    from configs import dance as dance_config

    config = dance_config.get_config()
    config.dance.train_minutes, config.dance.face_share = 4.0, 0.25
    job = object.__new__(dance.Job)
    job.config, job.workdir, job.command = config, str(tmp_path), ""
    job.state = dance.State("/target.mp4", 192, 192, 112, "global,face")
    calls = []

    def fake_train(cfg, workdir):  # records what each call trains; each takes no time
        calls.append((cfg.train.stages, cfg.train.num_steps, cfg.train.face.num_steps, cfg.train.log_every))

    def steady_two_steps_per_second(_events_dir):
        counts = np.arange(dance.PROBE_LOG_EVERY, dance.PROBE_STEPS + 1, dance.PROBE_LOG_EVERY)
        return {"steps_per_sec": (counts, (counts - 1) / (counts / 2.0))}

    monkeypatch.setattr(dance.train, "train_and_evaluate", fake_train)
    monkeypatch.setattr(dance.report, "read_scalars", steady_two_steps_per_second)
    job._training()
    probe, face_steps, log_every = dance.PROBE_STEPS, config.train.face.num_steps, config.train.log_every
    global_steps = calls[1][1]
    assert probe + 359 <= global_steps <= probe + 360  # 180 s at 2 steps/s after the probe (less the calls' own time)
    assert calls[0] == ("global", probe, face_steps, dance.PROBE_LOG_EVERY)
    assert calls[1] == ("global", global_steps, face_steps, log_every)
    assert calls[2] == ("global,face", global_steps, probe, dance.PROBE_LOG_EVERY)  # after the global stage is done
    assert calls[3][::3] == ("global,face", log_every) and calls[3][1] == global_steps
    assert probe + 119 <= calls[3][2] <= probe + 120  # 60 s
    assert job.state.steps["global"]["decay_steps"] == int(round(global_steps * config.train.decay_steps
                                                                 / config.train.num_steps))
    assert job.state.steps["face"]["d_alone_steps"] >= probe  # the probe's steps were the face D's alone


# --- the one command ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dance") / "uninterrupted run")
    proc = run(command(workdir, *STEPS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc.stdout


@pytest.mark.slow
def test_one_command_runs_every_phase_and_writes_the_page(uninterrupted):
    workdir, out = uninterrupted
    for number, name in enumerate(dance.PHASES, 1):
        assert_facts(out, f"phase {number} of {len(dance.PHASES)}, {name}: done")
    assert "job elapsed" in out and "left (ETA" in out
    state = json.load(open(os.path.join(workdir, filenames.DANCE_STATE)))
    assert (state["height"], state["width"]) == (64, 32)  # single_person_cam01 is 1920x1080 as displayed
    assert state["stages"] == "global" and "face stage skipped" in state["face_reason"]  # its face is masked
    assert set(state["phases"]) == set(dance.PHASES)
    assert dance._checkpoint_step(workdir, "global") == 6 and dance._checkpoint_step(workdir, "face") == 0
    pose = np.load(os.path.join(workdir, "pose", "keypoints.npz"))
    assert len(pose["keypoints"]) == 24
    assert decoded(os.path.join(workdir, "videos", "single_person_cam02.mp4")).shape == (24, 64, 32, 3)
    assert os.path.exists(os.path.join(workdir, "videos", "single_person_cam02_side_by_side.mp4"))
    page = open(os.path.join(workdir, "report", "index.html")).read()
    assert "../videos/single_person_cam02.mp4" in page and "Dance phases" in page and "face stage skipped" in page
    # the same command again: every phase is found done and nothing is redone
    again = run(command(workdir, *STEPS))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "training: done before" in again.stdout and "every source is rendered" in again.stdout


@pytest.mark.slow
def test_killed_in_each_phase_the_same_command_finishes_as_an_uninterrupted_run(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    workdir = str(tmp_path / "killed run")
    argv = command(workdir, *STEPS)
    global_checkpoints = os.path.join(workdir, "checkpoints", "global")
    checkpointed = lambda w: os.path.isdir(global_checkpoints) and "2" in os.listdir(global_checkpoints)  # noqa: E731
    for phase, when in [("pose", _after(0.5)), ("dataset", _after(0.5)), ("training", checkpointed),
                        ("evaluation", _after(2.0)), ("transfer", _after(2.0)), ("page", _after(0.0))]:
        out = run_and_kill(argv, phase, when)
        assert phase not in finished_phases(workdir), out[-2000:]  # killed inside the phase, not after it
        if phase == "evaluation":  # the run after the one killed in training went on from its checkpoint
            assert "resuming from the checkpoint at step" in out, out[-3000:]
    proc = run(argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every deterministic output equals the uninterrupted run's
    for name in ("keypoints", "raw_keypoints"):
        np.testing.assert_array_equal(np.load(os.path.join(workdir, "pose", "keypoints.npz"))[name],
                                      np.load(os.path.join(reference, "pose", "keypoints.npz"))[name])
    assert scores(workdir) == scores(reference)
    for name in ("single_person_cam02.mp4", "single_person_cam02_side_by_side.mp4"):
        np.testing.assert_array_equal(decoded(os.path.join(workdir, "videos", name)),
                                      decoded(os.path.join(reference, "videos", name)))
    assert set(finished_phases(workdir)) == set(dance.PHASES)


def _after(seconds: float):
    """A condition that holds ``seconds`` after it is first asked."""
    start = []

    def when(_workdir):
        start.append(time.monotonic()) if not start else None
        return time.monotonic() - start[0] >= seconds

    return when


# --- bad input ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nobody_video(tmp_path_factory):
    """20 frames of an empty room: a gradient, no person."""
    path = str(tmp_path_factory.mktemp("nobody") / "empty_room.mp4")
    ramp = np.linspace(40, 200, 64, dtype=np.uint8)
    with video.VideoWriter(path, 30.0) as writer:
        for t in range(20):
            frame = np.stack([np.tile(ramp[:, None], (1, 48))] * 3, axis=-1)
            writer.write(np.roll(frame, t, axis=0))
    return path


@pytest.mark.slow
def test_a_target_with_nobody_in_it_is_one_error_line(nobody_video, tmp_path):
    proc = run(command(str(tmp_path / "w"), *STEPS, target=nobody_video))
    assert_one_line_error(proc, "no person detected", "empty_room.mp4", "a person is visible")
    assert not os.path.exists(tmp_path / "w" / "tfds")  # it stopped at the first phase


@pytest.mark.slow
def test_a_target_too_short_to_hold_frames_out_is_one_error_line(tmp_path):
    proc = run(command(str(tmp_path / "w"), *STEPS, "--config.input.max_frames=8"))
    assert_one_line_error(proc, "too short to hold frames out", "to score on", "film at least")


@pytest.mark.slow
def test_a_budget_too_short_for_one_step_is_one_error_line_and_keeps_what_was_done(tmp_path):
    workdir = str(tmp_path / "w")
    proc = run(command(workdir, "--config.dance.train_minutes=0.01"))
    assert_one_line_error(proc, "training budget of 0.0 min is too short", "--config.dance.train_minutes")
    assert {"pose", "dataset"} <= finished_phases(workdir)  # the next try starts at training


@pytest.mark.slow
def test_a_failing_source_is_reported_and_the_others_are_still_rendered(uninterrupted, nobody_video, tmp_path):
    reference, _ = uninterrupted
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    shutil.rmtree(os.path.join(workdir, "videos"))
    good = real_video("single_person_cam02.mp4")
    proc = run(command(workdir, *STEPS, source=f"{nobody_video},{good}"))
    assert_one_line_error(proc, "1 of 2 sources failed", "empty_room", "no person")
    assert os.path.exists(os.path.join(workdir, "videos", "single_person_cam02.mp4"))
    summary = json.load(open(os.path.join(workdir, "videos", "transfer_summary.json")))
    assert [s["status"] for s in summary["sources"]] == ["failed", "rendered"]
    page = open(os.path.join(workdir, "report", "index.html")).read()
    assert "failed: " in page and "single_person_cam02.mp4" in page
    assert "transfer" not in finished_phases(workdir)  # the next run tries the failed source again


@pytest.mark.parametrize("which", ["target", "source"])
def test_a_missing_video_fails_before_any_work(tmp_path, which):
    missing = str(tmp_path / f"no_such_{which}.mp4")
    argv = command(str(tmp_path / "w"), *STEPS, **{which: missing})
    assert_one_line_error(run(argv), f"no_such_{which}.mp4")
    assert not os.path.exists(tmp_path / "w" / "pose")
