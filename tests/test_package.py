"""The package installs (pyproject.toml) with its configs and TFDS builders, and runs outside the checkout."""

import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow
def test_the_installed_package_runs_from_another_directory_with_its_configs(tmp_path):
    source = tmp_path / "checkout"  # a copy, so the build's files never land in the repository
    for name in ("edn_jax", "configs", "data_builders"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(source)], check=True, capture_output=True)
    assert (site / "configs" / "default.py").exists() and (site / "data_builders" / "edn_synthetic" / "README.md").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    # the library (with the defaults it reads from configs and the builders it builds with) imports from the install
    probe = subprocess.run([sys.executable, "-c", "import configs, edn_jax.data.build, edn_jax.stages; "
                            "print(edn_jax.data.build.__file__); print(configs.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert all(line.startswith(str(site)) for line in probe.stdout.split()), probe.stdout
    # the command reads an installed config; the edn-jax script is the same command
    for argv in ([sys.executable, "-m", "edn_jax.main"], [str(site / "bin" / "edn-jax")]):
        proc = subprocess.run([*argv, "--config", str(site / "configs" / "demo.py"), "--workdir", "w",
                               "--config.mode=waltz"], cwd=elsewhere, env=env, capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error: config.mode='waltz' is not a mode"), \
            proc.stderr[-2000:]
