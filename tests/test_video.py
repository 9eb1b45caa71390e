"""Video IO: frames survive the round trip, interrupted writes leave nothing that looks complete."""

import os

import numpy as np
import pytest

from edn_jax import video
from edn_jax.errors import EdnError


def _frames(n, h=64, w=96):
    # Smooth content (codec friendly) that differs per frame.
    y, x = np.mgrid[0:h, 0:w]
    return [np.stack([(x * 2 + 10 * t) % 256, (y * 3) % 256, np.full_like(x, 40 * t % 256)], -1).astype(np.uint8)
            for t in range(n)]


def test_write_then_read_round_trip(tmp_path):
    path = str(tmp_path / "clip.mp4")
    frames = _frames(12)
    assert video.write_video(path, frames, fps=24) == 12
    info = video.probe_video(path)
    assert (info.height, info.width, info.num_frames) == (64, 96, 12)
    assert abs(info.fps - 24) < 1e-3
    back = list(video.iter_frames(path))
    assert len(back) == 12
    for a, b in zip(frames, back):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 6  # lossy H.264, same picture and colour order
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)
    assert [p for p in os.listdir(tmp_path)] == ["clip.mp4"]


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with video.VideoWriter(str(path), fps=10) as writer:
            for i, frame in enumerate(_frames(5)):
                if i == 3:
                    raise RuntimeError("killed mid-render")
                writer.write(frame)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_only_replaced_when_complete(tmp_path):
    path = tmp_path / "clip.mp4"
    video.write_video(str(path), _frames(4), fps=10)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with video.VideoWriter(str(path), fps=10) as writer:
            writer.write(_frames(1)[0])
            raise RuntimeError("interrupted")
    assert path.read_bytes() == before


def test_odd_frame_size_is_a_clear_error(tmp_path):
    with pytest.raises(EdnError, match="odd"):
        video.write_video(str(tmp_path / "odd.mp4"), [np.zeros((63, 64, 3), np.uint8)], fps=10)
    assert list(tmp_path.iterdir()) == []


def test_max_frames_limits_the_stream(tmp_path):
    path = str(tmp_path / "clip.mp4")
    video.write_video(path, _frames(10), fps=10)
    assert len(list(video.iter_frames(path, max_frames=4))) == 4
