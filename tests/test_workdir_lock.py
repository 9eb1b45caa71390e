"""One writer per workdir: a second run into a workdir in use is refused in one line and writes
nothing; a killed holder leaves no stale lock; runs sharing a dataset directory build it once."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, assert_facts, assert_one_line_error, synthetic_pose_config, transfer_config
from configs import tiny
from edn_jax import main
from edn_jax.errors import EdnError
from edn_jax.pose import pipeline
from edn_jax.runtime import workdir_lock

ENV = dict(os.environ, PYTHONPATH=str(REPO))


def listing(directory) -> dict[str, tuple[int, int]]:
    """Every file under ``directory``: relative path -> (size, mtime in ns)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns)
    return out


def contend(workdir: str, mode: str) -> subprocess.CompletedProcess:
    """A second ``python -m edn_jax.main`` of ``mode`` into ``workdir``, run to its end."""
    return subprocess.run([sys.executable, "-m", "edn_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}",
                           f"--config.mode={mode}"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


def run_with_a_contender(monkeypatch, config, workdir: str) -> subprocess.CompletedProcess:
    """Runs ``config`` into ``workdir`` in this process; while it holds the workdir (before its mode
    starts), a second process runs the same mode into the same workdir. Returns that process, after
    checking that it changed nothing there."""
    seen = {}
    real = main.MODES[config.mode]

    def held(config, workdir, overrides=(), command=""):
        before = listing(workdir)
        seen["proc"] = contend(workdir, config.mode)
        assert listing(workdir) == before  # the refused run wrote nothing
        return real(config, workdir, overrides, command)

    monkeypatch.setitem(main.MODES, config.mode, held)
    main.run(config, workdir)
    return seen["proc"]


def refused(proc, workdir: str, mode: str) -> None:
    line = assert_one_line_error(proc, str(workdir), "is in use by another edn_jax run", f"pid {os.getpid()}",
                                 f"mode {mode}", "wait for it or use another --workdir")
    assert "started 20" in line


def test_pose_mode_refuses_a_second_run_and_finishes_as_alone(tmp_path, monkeypatch):
    alone = str(tmp_path / "alone")
    main.run(synthetic_pose_config(8), alone)
    workdir = str(tmp_path / "work")
    refused(run_with_a_contender(monkeypatch, synthetic_pose_config(8), workdir), workdir, "pose")
    assert sorted(os.listdir(workdir)) == sorted(os.listdir(alone))
    a, b = pipeline.load_keypoints(os.path.join(alone, "keypoints.npz")), pipeline.load_keypoints(
        os.path.join(workdir, "keypoints.npz"))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_build_mode_refuses_a_second_run_and_finishes_as_alone(tmp_path, monkeypatch):
    def config():
        c = tiny.get_config()
        c.mode = "build"
        c.build.height = c.build.width = 32
        c.synthetic.num_frames = 10
        return c

    main.run(config(), str(tmp_path / "alone"))
    workdir = str(tmp_path / "work")
    refused(run_with_a_contender(monkeypatch, config(), workdir), workdir, "build")
    assert sorted(listing(tmp_path / "alone")) == sorted(listing(workdir))


def _metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "train_summary.json")) as f:
        return json.load(f)["stages"][0]["metrics"]


def test_train_mode_refuses_a_second_run_and_finishes_as_alone(tmp_path, monkeypatch):
    config = tiny.get_config()
    config.train.num_steps, config.train.decay_steps, config.train.evaluate_holdout = 1, 0, False
    main.run(config, str(tmp_path / "alone"))
    workdir = str(tmp_path / "work")
    refused(run_with_a_contender(monkeypatch, config, workdir), workdir, "train")
    alone, held = _metrics(str(tmp_path / "alone")), _metrics(workdir)
    assert {k: v for k, v in held.items() if k != "steps_per_sec"} == pytest.approx(
        {k: v for k, v in alone.items() if k != "steps_per_sec"}, rel=1e-6)
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))  # gone when the run ends


def test_evaluate_and_transfer_modes_refuse_a_second_run_and_finish_as_alone(synthetic_target, tmp_path,
                                                                             monkeypatch):
    config = transfer_config(synthetic_target, synthetic_frames=4, chunk_frames=4)
    main.run(config, str(tmp_path / "transfer_alone"))
    workdir = str(tmp_path / "transfer")
    refused(run_with_a_contender(monkeypatch, config, workdir), workdir, "transfer")
    for name in ("synthetic_seed1.mp4",):
        assert open(os.path.join(workdir, name), "rb").read() == open(tmp_path / "transfer_alone" / name, "rb").read()
    monkeypatch.undo()
    config = transfer_config(synthetic_target)
    config.mode = "evaluate"
    config.evaluate.model_workdir, config.evaluate.pose_distance, config.evaluate.max_frames = \
        synthetic_target[1], False, 4
    main.run(config, str(tmp_path / "evaluate_alone"))
    workdir = str(tmp_path / "evaluate")
    refused(run_with_a_contender(monkeypatch, config, workdir), workdir, "evaluate")
    stage = os.listdir(os.path.join(workdir, "evaluation"))[0]
    first, alone = (json.load(open(os.path.join(d, "evaluation", stage, "metrics.json")))
                    for d in (workdir, tmp_path / "evaluate_alone"))
    first.pop("outputs"), alone.pop("outputs")  # their paths name the workdir
    assert first == alone


HOLDER = """
import sys, time
from edn_jax.runtime import workdir_lock
with workdir_lock.workdir_lock(sys.argv[1], "train"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    workdir = str(tmp_path / "work")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, workdir], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EdnError) as caught:
            with workdir_lock.workdir_lock(workdir, "pose"):
                pass
        assert_facts(caught.value, "in use by another edn_jax run", f"pid {holder.pid}", "mode train")
        with workdir_lock.workdir_lock(workdir, "train", process_index=1):  # the same job's other hosts pass
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    with workdir_lock.workdir_lock(workdir, "pose"):  # at once: the kernel dropped the dead holder's lock
        assert time.monotonic() - started < 1.0


def test_a_workdir_in_a_bucket_is_locked_by_a_heartbeat(tmp_path, capsys):
    workdir = f"ram://edn_lock_test_{os.getpid()}/work"
    with workdir_lock.workdir_lock(workdir, "train"):
        with pytest.raises(EdnError, match="is in use by another edn_jax run"):
            with workdir_lock.workdir_lock(workdir, "transfer"):
                pass
    with workdir_lock.workdir_lock(workdir, "train"):  # released: free again
        pass
    # A holder that stopped beating (a preempted VM) is taken over, and the takeover is said.
    stale = workdir_lock.Holder(4242, "gone-host", "train", "2026-01-01 00:00:00", "old",
                                time.time() - 2 * workdir_lock.STALE_AFTER_S)
    from edn_jax.runtime import storage

    with storage.open(storage.join(workdir, workdir_lock.LOCK_NAME), "w") as f:
        f.write(stale.to_json())
    with workdir_lock.workdir_lock(workdir, "train"):
        pass
    assert_facts(capsys.readouterr().err, "taking over", "pid 4242", "gone-host")


TRAIN_INTO = """
import sys
from absl import app
from edn_jax import command_line, main
sys.argv = ["edn_jax.main", "--config=configs/tiny.py", "--workdir=" + sys.argv[1], "--config.build.data_dir=" + sys.argv[2],
            "--config.train.num_steps=1", "--config.train.decay_steps=0", "--config.train.evaluate_holdout=False"]
app.run(main.main, flags_parser=command_line.parse_flags)
"""


@pytest.mark.slow
def test_two_trainings_over_one_dataset_directory_build_it_once(tmp_path):
    data_dir = str(tmp_path / "shared_tfds")
    runs = [subprocess.Popen([sys.executable, "-c", TRAIN_INTO, str(tmp_path / name), data_dir], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in ("a", "b")]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum("building the training dataset" in out for out in outputs) == 1, outputs
    versions = [root for root, dirs, files in os.walk(data_dir) if "dataset_info.json" in files]
    assert len(versions) == 1, versions
    assert not [d for root, dirs, _ in os.walk(data_dir) for d in dirs if d.startswith("incomplete")]
    for name in ("a", "b"):
        assert os.path.isfile(tmp_path / name / "train_summary.json")
