"""Every bad flag, config file, workdir and input ends in one `error:` line, exit status 2, no traceback,
and leaves the workdir's files as they were; pose outputs appear all at once or not at all; a full
disk is one line. The command lines run through the real ``python -m edn_jax.main`` entry point
(tests/cli_driver.py: one process, one fork per command line)."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, synthetic_pose_config
from configs import default
from edn_jax import command_line, main
from edn_jax.errors import EdnError
from edn_jax.models import checkpoints
from edn_jax.pose import openpose_json, pipeline
from edn_jax.runtime import fileio, workdir_lock

VIDEO = "../shared/data/single_person_cam01.mp4"


def snapshot(directory) -> dict:
    """Every file under ``directory`` with its bytes (directories as None)."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), directory)] = None
        for name in files:
            path = os.path.join(root, name)
            regular = os.path.isfile(path)  # a FIFO would block the read
            out[os.path.relpath(path, directory)] = open(path, "rb").read() if regular else "not a regular file"
    return out


def cases(tmp):
    """(name, argv, fragments of the error line): one per class of bad input."""
    work = str(tmp / "work")
    (tmp / "afile").write_text("a user's file\n")
    (tmp / "syntax.py").write_text("def get_config(:\n")
    (tmp / "noget.py").write_text("X = 1\n")
    (tmp / "raises.py").write_text("def get_config():\n    return 1 / 0\n")
    os.mkfifo(tmp / "stream.mp4")
    taken = tmp / "taken"
    (taken / "stick.mp4").mkdir(parents=True)
    (taken / "keypoints.npz").write_bytes(b"an earlier run's keypoints")
    pose = ["--config", "configs/pose_video.py"]
    return [
        ("unknown field", ["--config", "configs/tiny.py", "--workdir", work, "--config.nope=1"],
         ["--config.nope", "no field nope"]),
        ("misspelt field", ["--config", "configs/tiny.py", "--workdir", work, "--config.train.batch_sise=2"],
         ["no field train.batch_sise", "did you mean --config.train.batch_size"]),
        ("wrong type", ["--config", "configs/tiny.py", "--workdir", work, "--config.train.batch_size=abc"],
         ["--config.train.batch_size=abc", "invalid literal"]),
        ("missing workdir", ["--config", "configs/tiny.py"], ["--workdir is missing"]),
        ("missing config", ["--workdir", work], ["--config is missing"]),
        ("stray argument", ["--config", "configs/tiny.py", "--workdir", work, "extra"], ["unexpected argument 'extra'"]),
        ("unknown flag", ["--config", "configs/tiny.py", "--wrkdir", work], ["Unknown command line flag 'wrkdir'"]),
        ("no config file", ["--config", "configs/nosuch.py", "--workdir", work], ["configs/nosuch.py does not exist"]),
        ("syntax error", ["--config", str(tmp / "syntax.py"), "--workdir", work], ["syntax error at line 1"]),
        ("no get_config", ["--config", str(tmp / "noget.py"), "--workdir", work], ["has no get_config()"]),
        ("get_config raises", ["--config", str(tmp / "raises.py"), "--workdir", work],
         ["ZeroDivisionError at line 2"]),
        ("unknown base", ["--config", "configs/transfer.py:nosuch", "--workdir", work],
         ["get_config('nosuch') fails", "No module named 'configs.nosuch'"]),
        ("workdir is a file", [*pose, "--workdir", str(tmp / "afile"), f"--config.input.video={VIDEO}"],
         ["is a file, not a directory"]),
        ("workdir cannot be created", [*pose, "--workdir", str(tmp / "afile" / "sub"), f"--config.input.video={VIDEO}"],
         ["cannot be created"]),
        ("a FIFO as the video", [*pose, "--workdir", work, f"--config.input.video={tmp / 'stream.mp4'}"],
         ["not a regular file"]),
        ("an output name taken by a directory", [*pose, "--workdir", str(taken), "--config.overwrite=True",
                                                 f"--config.input.video={VIDEO}"],
         ["stick.mp4 is a directory", "nothing was written"]),
        ("transfer: no model", ["--config", "configs/transfer.py", "--workdir", work,
                                f"--config.transfer.model_workdir={tmp / 'nomodel'}"], ["nomodel does not exist"]),
        ("evaluate: no model", ["--config", "configs/demo.py", "--workdir", str(tmp / "nomodel"),
                                "--config.mode=evaluate"], ["has no checkpoints"]),
        ("pose: no OpenPose directory", ["--config", "configs/default.py", "--workdir", work,
                                         f"--config.input.openpose_dir={tmp / 'nojson'}",
                                         "--config.input.openpose_size=(720, 1280)"], ["does not exist"]),
        ("build: no video", ["--config", "configs/default.py", "--workdir", work, "--config.mode=build",
                             f"--config.input.video={tmp / 'nope.mp4'}"], ["video not found"]),
        ("train: stages out of order", ["--config", "configs/tiny.py", "--workdir", work,
                                        "--config.train.stages=face,global"], ["out of order"]),
        ("train: no such dataset", ["--config", "configs/tiny.py", "--workdir", work,
                                    f"--config.data.dataset_dir={tmp / 'nodata'}"], ["nodata"]),
        ("ablation: VGG19 without weights", ["--config", "configs/ablation.py", "--workdir", work,
                                             "--config.loss.perceptual=vgg19"], ["no vgg19 weights file given"]),
    ]


@pytest.mark.slow
def test_every_bad_command_line_is_one_error_line_and_changes_nothing(tmp_path):
    table = cases(tmp_path)
    before = snapshot(tmp_path)
    spec = tmp_path.parent / f"{tmp_path.name}_cases.json"
    out = tmp_path.parent / f"{tmp_path.name}_results.json"
    spec.write_text(json.dumps([{"argv": argv, "timeout": 60} for _, argv, _ in table]))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, str(REPO / "tests" / "cli_driver.py"), str(spec), str(out)], cwd=REPO, env=env,
                   check=True, timeout=900)
    results = json.loads(out.read_text())
    clean = 0
    for (name, _, fragments), result in zip(table, results, strict=True):
        stderr = result["stderr"]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert result["rc"] == 2, (name, result["rc"], stderr[-1500:])
        assert len(errors) == 1 and "Traceback" not in stderr and "FATAL" not in stderr, (name, stderr[-1500:])
        assert ";" in errors[0], (name, errors[0])  # problem; fix
        for fragment in fragments:
            assert fragment in errors[0], (name, errors[0])
        clean += 1
    assert clean == len(table)
    after = snapshot(tmp_path)
    after = {k: v for k, v in after.items() if k != "work"}  # a workdir may be created (empty), nothing in it
    assert {k: v for k, v in before.items() if k != "work"} == after
    assert not os.path.exists(tmp_path / "work") or os.listdir(tmp_path / "work") == []


def test_config_file_checks_in_process(tmp_path):
    with pytest.raises(EdnError, match="takes no argument after the colon"):
        command_line.load_config_file("configs/tiny.py:extra")
    config = command_line.load_config_file("configs/transfer.py:demo")
    assert config.mode == "transfer" and config.model.ngf == 16  # demo's model under transfer mode
    command_line.check_overrides(config, ["train.batch_size", "model", "transfer.source"])
    with pytest.raises(EdnError, match="did you mean --config.model.ngf"):
        command_line.check_overrides(config, ["model.ngff"])
    assert command_line.override_names(["--config.a.b=1", "--noconfig.c", "--workdir=x"]) == ["a.b", "c"]
    assert command_line.flag_value(["--config", "a.py", "--config=b.py"], "config") == "b.py"


def test_workdir_checks_before_any_work(tmp_path):
    config = default.get_config()
    (tmp_path / "file").write_text("x")
    for workdir, fragment in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "cannot be created"),
                              ("", "--workdir is empty")):
        with pytest.raises(EdnError, match=fragment):
            main.run(config, str(workdir))
    command_line.check_workdir(str(tmp_path / "new" / "dir"))  # can be created: fine, and not created yet
    assert sorted(os.listdir(tmp_path)) == ["file"]  # the write probe leaves nothing


def test_a_fifo_is_refused_at_once(tmp_path):
    from edn_jax.runtime import video

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(EdnError, match="not a regular file"):
        video.probe_video(str(tmp_path / "pipe"))  # opening it for reading would block forever


def test_pose_outputs_appear_together_or_not_at_all(tmp_path, monkeypatch):
    """A full disk at the 5th JSON file: one error, no output left (none that looks complete), and
    a rerun without overwrite does the whole job (the interrupted run's staging is ours to remove)."""
    workdir = tmp_path / "pose"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("the user's own file\n")
    real = openpose_json.write_frame_json
    calls = []

    def full_at_fifth(path, people):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, people)

    monkeypatch.setattr(openpose_json, "write_frame_json", full_at_fifth)
    with pytest.raises(OSError) as info:
        pipeline.run_pose_mode(synthetic_pose_config(12), str(workdir))
    message = command_line.disk_full_message(info.value, str(workdir))
    assert message.startswith("no space left on the device holding") and "MiB free" in message
    assert sorted(os.listdir(workdir)) == ["notes.txt"]

    # kill -9 in the middle of the JSON set: the staging directory stays, without the commit marker.
    staging = workdir / ".pose_outputs.partial" / "openpose_json"
    staging.mkdir(parents=True)
    (staging / "frame_000000000000_keypoints.json").write_text("{")
    monkeypatch.setattr(openpose_json, "write_frame_json", real)
    outputs = pipeline.run_pose_mode(synthetic_pose_config(12), str(workdir))
    assert sorted(os.listdir(workdir)) == ["keypoints.npz", "notes.txt", "openpose_json", "overlay.mp4",
                                           "pose_summary.json", "stick.mp4"]
    assert len(openpose_json.read_sequence(outputs["openpose_json"])) == 12
    assert (workdir / "notes.txt").read_text() == "the user's own file\n"
    with pytest.raises(EdnError, match="already holds pose mode outputs"):
        pipeline.run_pose_mode(synthetic_pose_config(12), str(workdir))


def test_an_interrupted_commit_is_finished_at_the_next_start(tmp_path):
    outputs = {"a": ("a.txt", "file"), "d": ("d", "dir")}
    staged = fileio.StagedOutputs(str(tmp_path), "set", outputs, overwrite=False)
    staged.start()
    open(staged.path("a"), "w").write("new a")
    os.makedirs(staged.path("d"))
    open(os.path.join(staged.path("d"), "x"), "w").write("x")
    open(os.path.join(staged.staging, fileio.COMMIT_MARKER), "w").close()
    os.replace(staged.path("a"), staged.final("a"))  # killed after the first move
    fileio.StagedOutputs(str(tmp_path), "set", outputs, overwrite=False).recover()
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "d"] and open(tmp_path / "d" / "x").read() == "x"
    # A staging directory without the marker is an interrupted run's: removed, nothing moved.
    again = fileio.StagedOutputs(str(tmp_path), "set", outputs, overwrite=True)
    again.start()
    open(again.path("a"), "w").write("half")
    again.recover()
    assert open(tmp_path / "a.txt").read() == "new a" and not os.path.exists(again.staging)


def test_disk_full_anywhere_in_a_chain_is_recognised(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as e:
        assert "no space left" in command_line.disk_full_message(e, str(tmp_path))
    wrapped = ValueError('RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database: Failed writing')  # Orbax's
    assert command_line.disk_full_message(wrapped, str(tmp_path)) is not None
    assert command_line.disk_full_message(ValueError("a bug"), str(tmp_path)) is None


def test_a_corrupt_checkpoint_is_one_whole_line(tmp_path):
    import jax.numpy as jnp

    ckpt = checkpoints.Checkpoints(str(tmp_path / "c"), {"stage": "test"}, every=1, last_step=1)
    state = {"w": jnp.arange(4.0)}
    ckpt.save(1, state, {"step": 1}, force=True)
    ckpt.wait()
    ckpt.close()
    for root, _, files in os.walk(tmp_path / "c" / "1" / "state"):
        for name in files:
            if not name.endswith(".json"):
                open(os.path.join(root, name), "wb").write(b"\0garbage")
    reader = checkpoints.Checkpoints(str(tmp_path / "c"), {"stage": "test"}, read_only=True)
    with pytest.raises(EdnError) as info:
        reader.restore(1, {"w": jnp.zeros(4)})
    reader.close()
    message = str(info.value)
    assert message.startswith(f"cannot restore the checkpoint at step 1 in {tmp_path / 'c'} (")
    assert message.endswith("; delete that step's directory or use a new --workdir")
    assert "See full" not in message and "\n" not in message
    long = ValueError("Failed to read the array. " + "word " * 200)
    assert checkpoints.first_sentence(long) == "ValueError: Failed to read the array"
    assert checkpoints.first_sentence(ValueError("x" * 10 + " y" * 400)).endswith(" ...")


def test_pose_json_set_survives_kill_9(tmp_path):
    """A real kill -9 while the per-frame JSON files are being written: no final output exists, and the
    rerun (no overwrite) writes the complete set."""
    workdir = tmp_path / "pose"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "edn_jax.main", "--config", "configs/default.py", "--workdir", str(workdir),
            "--config.synthetic.num_frames=3000", "--config.synthetic.height=64", "--config.synthetic.width=64",
            "--config.pose.output_height=64"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = workdir / ".pose_outputs.partial" / "openpose_json"
    try:
        for _ in range(6000):
            if staging.is_dir() and len(os.listdir(staging)) > 20:
                break
            if proc.poll() is not None:
                break
            import time

            time.sleep(0.01)
        proc.kill()
    finally:
        proc.wait()
    assert staging.is_dir() and 0 < len(os.listdir(staging)) < 3000, "killed too late to test anything"
    assert [n for n in os.listdir(workdir) if not n.startswith(".")] == []
    pipeline.run_pose_mode(synthetic_pose_config(40), str(workdir))
    assert len(openpose_json.read_sequence(str(workdir / "openpose_json"))) == 40
    assert not (workdir / ".pose_outputs.partial").exists()
    left = sorted(n for n in os.listdir(workdir) if n != workdir_lock.LOCK_NAME)  # the killed run's lock file stays
    np.testing.assert_equal(left, ["keypoints.npz", "openpose_json", "overlay.mp4", "pose_summary.json", "stick.mp4"])
