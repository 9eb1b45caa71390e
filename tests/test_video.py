"""Video IO: frames survive the round trip, interrupted writes leave nothing that looks complete."""

import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.runtime import video


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


def _duration_s(path: str, stream: str) -> float:
    """Seconds of ``path``'s first video or audio stream, as ffmpeg decodes it (its last 'time=')."""
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path, "-map", f"0:{stream}:0",
                            "-f", "null", "-"], capture_output=True, text=True, check=True)
    h, m, s = re.findall(r"time=(\d+):(\d+):([\d.]+)", probe.stderr)[-1]
    return 3600 * int(h) + 60 * int(m) + float(s)


def _with_display_rotation(src, dst, degrees):
    """``src`` with its frames untouched and a display rotation in its metadata, as a phone writes it."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-display_rotation", str(degrees),
                    "-i", src, "-c", "copy", dst], check=True)


@pytest.mark.parametrize("degrees,quarter_turns", [(90, 1), (-90, 3), (180, 2)])
def test_a_video_stored_with_a_display_rotation_is_read_as_displayed(tmp_path, degrees, quarter_turns):
    stored = str(tmp_path / "stored.mp4")
    video.write_video(stored, _frames(4), fps=10)
    raw = list(video.iter_frames(stored))
    phone = str(tmp_path / "phone.mp4")
    _with_display_rotation(stored, phone, degrees)
    info = video.probe_video(phone)
    shown = list(video.iter_frames(phone))
    h, w = raw[0].shape[:2]
    assert (info.height, info.width) == ((w, h) if quarter_turns % 2 else (h, w))
    assert len(shown) == 4
    for a, b in zip(raw, shown):  # the same decoded pixels, turned counter-clockwise as ffmpeg displays them
        np.testing.assert_array_equal(np.rot90(a, quarter_turns), b)
    frame = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", phone, "-frames:v", "1",
                            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    ffmpeg_shown = np.frombuffer(frame, np.uint8).reshape(shown[0].shape)  # ffmpeg's own player rotates too
    assert np.abs(ffmpeg_shown.astype(int) - shown[0].astype(int)).mean() < 3


def test_audio_is_copied_in_the_encoding_pass_and_cut_to_the_video(tmp_path):
    tone = str(tmp_path / "tone.m4a")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=3", "-c:a", "aac", tone], check=True)
    path = str(tmp_path / "clip.mp4")
    with video.VideoWriter(path, fps=10, audio_from=tone) as writer:
        for frame in _frames(10):  # one second of video against three of sound
            writer.write(frame)
    assert video.has_audio(path)
    assert len(list(video.iter_frames(path))) == 10
    assert abs(_duration_s(path, "a") - 1.0) < 0.15, _duration_s(path, "a")
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "tone.m4a"]  # one pass: no intermediate file left
    silent = str(tmp_path / "silent.mp4")
    video.write_video(silent, _frames(3), fps=10)
    assert not video.has_audio(silent)


def test_outputs_that_appear_together_are_completed_then_committed(tmp_path):
    a, b = (video.VideoWriter(str(tmp_path / name), fps=10).open() for name in ("a.mp4", "b.mp4"))
    for writer in (a, b):
        writer.write(_frames(1)[0])
        writer.complete()
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()  # encoded, not yet in place
    a.commit()
    b.abort(RuntimeError("its sibling failed"))
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]
