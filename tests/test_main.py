"""Bad input through the real command line: one `error:` line naming the problem and fix, exit status 2."""

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, assert_one_line_error
from edn_jax import main
from edn_jax.errors import EdnError
from edn_jax.runtime import video
from configs import default


def run_cli(tmp_path, *flags, config="configs/default.py"):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "edn_jax.main", f"--config={config}",
                           f"--workdir={tmp_path / 'work'}", *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)




@pytest.mark.slow
def test_missing_video(tmp_path):
    proc = run_cli(tmp_path, f"--config.input.video={tmp_path / 'nope.mp4'}")
    assert_one_line_error(proc, "video not found", "nope.mp4")
    assert not (tmp_path / "work" / "keypoints.npz").exists()


@pytest.mark.slow
def test_not_a_video(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n")
    assert_one_line_error(run_cli(tmp_path, f"--config.input.video={bogus}"), "cannot read", "notes.mp4")


@pytest.mark.slow
def test_zero_frame_video(tmp_path):
    import imageio_ffmpeg

    empty = tmp_path / "empty.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=black:s=64x64:d=1", "-frames:v", "0", "-c:v", "libx264", str(empty)], check=True)
    assert_one_line_error(run_cli(tmp_path, f"--config.input.video={empty}"), "no video frames")


@pytest.mark.slow
def test_video_without_a_person(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "empty_room.mp4")
    # A static room: a wall gradient and a floor, with sensor noise; nobody in it.
    wall = np.linspace(60, 200, 240, dtype=np.float32)[:, None, None] * np.ones((1, 320, 3), np.float32)
    wall[170:] = (90, 70, 50)
    video.write_video(path, (np.clip(wall + rng.normal(0, 3, wall.shape), 0, 255).astype(np.uint8)
                             for _ in range(6)), fps=10)
    assert_one_line_error(run_cli(tmp_path, f"--config.input.video={path}"), "no person detected", "6 frames")


@pytest.mark.parametrize("flag,fragment", [
    ("--config.pose.subject=tallest", "pose.subject='tallest'"),
    ("--config.mode=waltz", "config.mode='waltz'"),
])
@pytest.mark.slow
def test_invalid_config_value_cli(tmp_path, flag, fragment):
    assert_one_line_error(run_cli(tmp_path, flag), fragment)


@pytest.mark.parametrize("field,value,fragment", [
    ("pose.max_gap", -1, "max_gap"),
    ("pose.smoothing", "gaussian", "gaussian"),
    ("pose.median_window", 4, "window"),
    ("pose.max_people", 0, "max_people"),
    ("pose.conf_threshold", 1.5, "conf_threshold"),
    ("pose.output_height", 511, "output_height"),
    ("input.max_frames", -3, "max_frames"),
])
def test_invalid_config_values(tmp_path, field, value, fragment):
    config = default.get_config()
    if field == "pose.median_window":
        config.pose.smoothing = "median"
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(EdnError) as info:
        main.run(config, str(tmp_path / "work"))
    message = str(info.value)
    assert fragment in message and "\n" not in message and ";" in message  # problem; fix
    assert not (tmp_path / "work" / "keypoints.npz").exists()


@pytest.mark.slow
def test_invalid_config_type_is_refused_by_the_flag_parser(tmp_path):
    proc = run_cli(tmp_path, "--config.pose.max_gap=ten")
    assert proc.returncode != 0 and "max_gap" in proc.stderr
