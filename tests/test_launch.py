"""launch.sh: the commands each subcommand runs (seen through --dry-run), its one-line errors, and that a dry
run executes nothing. Runs a copy of launch.sh in a sandbox whose PATH holds only a few coreutils and, where
a test wants them, spies that log any call."""

import hashlib
import os
import shlex
import shutil
import subprocess

import pytest

from helpers import REPO

TOOLS = ("bash", "dirname", "sha256sum", "cut", "cat", "awk")
SPIES = ("gcloud", "git", "tar", "sudo", "python3.11")
TPU_ENV = {"TPU_NAME": "my-tpu", "ZONE": "europe-west4-a", "ACCELERATOR_TYPE": "v5litepod-16", "PROJECT": "proj"}


class Sandbox:
    def __init__(self, root, spies: bool):
        self.root, self.calls = root, root / "calls.log"
        self.repo, self.bin = root / "repo", root / "bin"
        self.repo.mkdir()
        self.bin.mkdir()
        for name in ("launch.sh", "requirements.txt"):
            shutil.copy(REPO / name, self.repo / name)
        for tool in TOOLS:
            os.symlink(shutil.which(tool), self.bin / tool)
        spy = f'#!/bin/bash\necho "${{0##*/}} $*" >> {shlex.quote(str(self.calls))}\n'
        for name in SPIES if spies else ():
            (self.bin / name).write_text(spy)
            (self.bin / name).chmod(0o755)
        (self.repo / ".venv" / "bin").mkdir(parents=True)
        (self.repo / ".venv" / "bin" / "python").write_text(spy)
        (self.repo / ".venv" / "bin" / "python").chmod(0o755)

    def stamp(self) -> None:
        """Mark the sandbox venv as up to date with requirements.txt."""
        digest = hashlib.sha256((self.repo / "requirements.txt").read_bytes()).hexdigest()
        (self.repo / ".venv" / ".requirements.sha256").write_text(digest + "\n")

    def run(self, *args, input=None, **env):
        full = {"PATH": str(self.bin), "HOME": str(self.root), **env}
        return subprocess.run(["bash", str(self.repo / "launch.sh"), *args], env=full, capture_output=True,
                              text=True, input=input, timeout=30)

    def dry(self, *args, **env) -> list[list[str]]:
        """The commands a dry run prints, each split into words; asserts it ran nothing."""
        proc = self.run(*args, **env)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines and all(line.startswith("+ ") for line in lines), proc.stdout
        assert not self.calls.exists(), self.calls.read_text()
        return [shlex.split(line[2:]) for line in lines]


@pytest.fixture
def box(tmp_path):
    return Sandbox(tmp_path, spies=True)


def _remote(cmd: list[str]) -> str:
    (command,) = [w for w in cmd if w.startswith("--command=")]
    return command[len("--command="):]


def _gcloud(cmd: list[str], verb: str) -> None:
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", verb, "my-tpu"], cmd
    assert "--zone=europe-west4-a" in cmd and "--project=proj" in cmd, cmd


def test_tpu_create(box):
    (cmd,) = box.dry("tpu-create", "--dry-run", "--spot", **TPU_ENV)
    _gcloud(cmd, "create")
    assert "--accelerator-type=v5litepod-16" in cmd and "--version=tpu-ubuntu2204-base" in cmd
    assert cmd[-1] == "--spot"


def test_tpu_defaults_and_env_dry_run(box):
    (cmd,) = box.dry("tpu-create", EDN_DRY_RUN="1")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "edn-tpu"]
    assert "--zone=us-central2-b" in cmd and "--accelerator-type=v4-8" in cmd
    assert not any(w.startswith("--project") for w in cmd)


def test_tpu_install_copies_this_checkout_to_every_worker(box):
    pack, scp, unpack, install = box.dry("tpu-install", "--dry-run", **TPU_ENV)
    assert pack[:2] == ["bash", "-c"] and "git ls-files" in pack[2] and "tar -czf" in pack[2]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    assert "my-tpu:/tmp/edn_jax_src.tgz" in scp and "--zone=europe-west4-a" in scp
    for cmd in (unpack, install):
        _gcloud(cmd, "ssh")
        assert "--worker=all" in cmd
    assert "tar -xzf /tmp/edn_jax_src.tgz -C edn_jax" in _remote(unpack)
    setup = _remote(install)
    assert "cd edn_jax && ./launch.sh setup" in setup
    assert ".venv/bin/python -m pip install -q 'jax[tpu]==0.7.1'" in setup
    assert "python3.11-venv" in setup


def test_tpu_install_can_clone_a_repository(box):
    clone, install = box.dry("tpu-install", "--dry-run", EDN_REPO_URL="https://example.com/me/edn_jax.git",
                             EDN_REPO_REF="v1", EDN_REMOTE_DIR="work/edn", **TPU_ENV)
    assert "--worker=all" in clone
    assert "git clone --depth 1 --branch v1 https://example.com/me/edn_jax.git work/edn" in _remote(clone)
    assert "cd work/edn && ./launch.sh setup" in _remote(install)


def test_tpu_run_starts_the_same_job_on_every_worker(box):
    flags = ["--config", "configs/cpu.py", "--workdir", "runs/my run", "--config.train.num_steps=10",
             "--config.data.dataset_dir=it's here"]
    (cmd,) = box.dry("tpu-run", "--dry-run", *flags, **TPU_ENV)
    _gcloud(cmd, "ssh")
    assert "--worker=all" in cmd
    words = shlex.split(_remote(cmd))
    start = words.index(".venv/bin/python")
    assert words[start - 2:start] == ["setsid", "nohup"] and words[start + 1:start + 3] == ["-m", "edn_jax.main"]
    assert words[start + 3:start + 3 + len(flags)] == flags
    assert words[start + 3 + len(flags):start + 5 + len(flags)] == [">", "edn_run.log"]
    assert words[:2] == ["cd", "edn_jax"]


def test_tpu_logs(box):
    (one,) = box.dry("tpu-logs", "--dry-run", **TPU_ENV)
    _gcloud(one, "ssh")
    assert "--worker=0" in one and _remote(one) == "tail -n 200 -F edn_jax/edn_run.log"
    (every,) = box.dry("tpu-logs", "--dry-run", "--all", EDN_TPU_LOG="x.log", **TPU_ENV)
    assert "--worker=all" in every and _remote(every).endswith("edn_jax/x.log")


def test_tpu_delete_asks_first(box):
    (cmd,) = box.dry("tpu-delete", "--dry-run", **TPU_ENV)
    _gcloud(cmd, "delete")
    assert cmd[-1] == "--quiet"
    declined = box.run("tpu-delete", input="n\n", **TPU_ENV)
    assert declined.returncode == 1 and "not deleted" in declined.stderr and not box.calls.exists()
    confirmed = box.run("tpu-delete", "--yes", **TPU_ENV)  # really runs, into the gcloud spy
    assert confirmed.returncode == 0, confirmed.stderr
    assert box.calls.read_text().split() == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-tpu",
                                             "--zone=europe-west4-a", "--project=proj", "--quiet"]


def readme_tpu_commands() -> list[list[str]]:
    """The ./launch.sh commands of the README's Cloud TPU section, in order, each split into words."""
    text = (REPO / "README.md").read_text()
    block = text.split("### Cloud TPU", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in joined.splitlines() if line.strip().startswith("./launch.sh")]


def test_the_readmes_spot_tpu_sequence_recreates_the_tpu_and_resumes_from_the_bucket(box):
    """A preempted spot TPU: delete, create, install, then the very same run command, whose workdir
    is the bucket (the checkpoints survive the VM there)."""
    commands = readme_tpu_commands()
    verbs = [c[0] for c in commands]
    assert verbs == ["tpu-create", "tpu-install", "tpu-run", "tpu-logs", "tpu-delete", "tpu-create", "tpu-install",
                     "tpu-run", "tpu-run", "tpu-delete"], verbs
    first, again = commands[2], commands[7]
    assert first == again and first[first.index("--workdir") + 1].startswith("gs://")
    assert all(c[1:] == ["--spot"] for c in commands if c[0] == "tpu-create")
    printed = []
    for verb, *rest in commands:
        printed += box.dry(verb, "--dry-run", *rest, **TPU_ENV)
    creates = [c for c in printed if c[4:5] == ["create"]]
    assert len(creates) == 2 and all("--spot" in c for c in creates)
    runs = [shlex.split(_remote(c)) for c in printed if c[4:5] == ["ssh"] and "edn_jax.main" in _remote(c)]
    assert len(runs) == 3 and runs[0] == runs[1]
    assert "--workdir" in runs[0] and runs[0][runs[0].index("--workdir") + 1] == "gs://my-edn/runs/target"
    assert "--config.transfer.model_workdir=gs://my-edn/runs/target" in runs[2]
    deletes = [c for c in printed if c[4:5] == ["delete"]]
    assert len(deletes) == 2 and all(c[-1] == "--quiet" for c in deletes)


def test_gpu_run_adds_cuda_jax_then_runs(box):
    box.stamp()
    install, job = box.dry("gpu-run", "--dry-run", "--config=configs/cpu.py", "--workdir", "runs/g", "--x='y'")
    assert install == [".venv/bin/python", "-m", "pip", "install", "-q", "jax[cuda12]==0.7.1"]
    assert job == [".venv/bin/python", "-m", "edn_jax.main", "--config=configs/cpu.py", "--workdir", "runs/g",
                   "--x='y'"]


def test_test_runs_the_suite_in_processes_by_file(box):
    box.stamp()
    (job,) = box.dry("test", "--dry-run", "-m", "not slow")
    assert job == [".venv/bin/python", "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "tests", "data_builders",
                   "-m", "not slow"]
    (job,) = box.dry("test", "--dry-run", EDN_TEST_WORKERS="4")
    assert job[4:6] == ["-n", "4"]


@pytest.mark.parametrize("sub", ["local", "run"])
def test_local_is_run(box, sub):
    box.stamp()
    (job,) = box.dry(sub, "--dry-run", "--config", "configs/cpu.py", "--workdir", "runs/l")
    assert job == [".venv/bin/python", "-m", "edn_jax.main", "--config", "configs/cpu.py", "--workdir", "runs/l"]


def test_dry_run_shows_setup_without_running_it(box):
    *setup, train_job, transfer_job = box.dry("demo", "--dry-run")  # no stamp: the venv would be refreshed
    assert [".venv/bin/python", "-m", "pip", "install", "-q", "-r", "requirements.txt"] in setup
    assert train_job == [".venv/bin/python", "-m", "edn_jax.main", "--config", "configs/demo.py", "--workdir",
                         "runs/demo"]
    assert transfer_job[:7] == [".venv/bin/python", "-m", "edn_jax.main", "--config", "configs/transfer.py",
                                "--workdir", "runs/demo/transfer"]
    assert "--config.transfer.model_workdir=runs/demo" in transfer_job
    assert not (box.repo / ".venv" / ".requirements.sha256").exists()


def test_without_dry_run_setup_and_run_really_run(box):
    first = box.run("run", "--config", "c.py", "--workdir", "w w")
    assert first.returncode == 0, first.stderr
    assert "setting up .venv" in first.stderr
    assert box.calls.read_text().splitlines() == [
        "python -m pip install -q --upgrade pip", "python -m pip install -q -r requirements.txt",
        "python -m pip check", "python -m edn_jax.main --config c.py --workdir w w"]
    box.calls.unlink()
    again = box.run("local", "--config", "c.py", "--workdir", "w")  # stamp written: no setup this time
    assert again.returncode == 0 and again.stderr == ""
    assert box.calls.read_text().splitlines() == ["python -m edn_jax.main --config c.py --workdir w"]


def test_no_gcloud_needed_for_a_dry_run(tmp_path):
    bare = Sandbox(tmp_path, spies=False)
    assert bare.dry("tpu-run", "--dry-run", "--config", "c.py", "--workdir", "w")[0][0] == "gcloud"
    proc = bare.run("tpu-create")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: gcloud not found") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("args,fragment", [
    (["tpu-run", "--workdir", "w"], "tpu-run needs --config"),
    (["tpu-run", "--dry-run", "--config.train.num_steps=3", "--workdir=w"], "tpu-run needs --config"),
    (["tpu-run", "--config", "c.py"], "tpu-run needs --workdir"),
    (["gpu-run", "--dry-run", "--workdir", "w"], "gpu-run needs --config"),
    (["tpu-logs", "--worker"], "tpu-logs takes --all or --worker=N"),
    (["tpu-delete", "now"], "tpu-delete takes only --yes"),
    (["tpu-install", "extra"], "tpu-install takes no arguments"),
])
def test_missing_or_bad_arguments_are_one_line_errors(box, args, fragment):
    proc = box.run(*args, **TPU_ENV)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {fragment}") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not box.calls.exists()


def test_usage_lists_every_subcommand(box):
    unknown, asked = box.run("nonsense"), box.run("help")
    assert unknown.returncode == 2 and asked.returncode == 0 and unknown.stderr == asked.stderr
    for sub in ("demo", "test", "run", "local", "setup", "gpu-run", "tpu-create", "tpu-install", "tpu-run",
                "tpu-logs", "tpu-delete", "--dry-run"):
        assert f"{sub} " in asked.stderr, sub
    assert not any(line.startswith(("#", "set -")) for line in asked.stderr.splitlines())
