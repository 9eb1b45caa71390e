"""Video reading and writing at the edges of the pipeline.

Reading uses OpenCV (fast, frame-exact seeking is not needed); writing uses the
ffmpeg that ships with imageio-ffmpeg, because OpenCV here cannot encode H.264, and
copies a source's audio track in the same pass.
Videos are written through ``fileio.atomic_path``, so an interrupted run never
leaves a file that looks finished; ffmpeg and OpenCV need local files, so a video at a
URL (``gs://``) is read from a local copy and written to a local file uploaded when
complete. ``prefetch`` decodes in a background thread (OpenCV releases the GIL while
decoding), so decoding overlaps pose detection.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import cv2
import imageio_ffmpeg
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.runtime import storage
from edn_jax.runtime.fileio import atomic_path


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int  # as reported by the container; may be an estimate, 0 when it reports none
    fps: float
    height: int
    width: int


def _is_media_container(path: str) -> bool:
    """Whether ffmpeg parses the file as a media container (it may still hold no frames)."""
    return "Input #0" in _ffmpeg_probe(path)


def _open(path: str) -> cv2.VideoCapture:
    remote = storage.is_remote(path)
    if not (storage.exists(path) if remote else os.path.exists(path)):  # a broken link is "not found"
        raise EdnError(f"video not found: {path}", "check the path (--config.input.video)")
    if storage.isdir(path):
        raise EdnError(f"{path} is a directory, not a video file", "pass a video file such as an .mp4")
    local = storage.local_file(path)  # OpenCV reads local files: a URL is copied here first, once
    if not stat.S_ISREG(os.stat(local).st_mode):  # a FIFO or device would block the decoder forever
        raise EdnError(f"{path} is not a regular file (a pipe, socket or device)",
                       "write the stream to a video file first and pass that file")
    cap = cv2.VideoCapture(local)
    # Frames as the video is displayed: a phone stores portrait video as landscape pixels with a
    # rotation in its metadata, which this OpenCV build ignores unless asked (FFmpeg backend).
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    if not cap.isOpened():
        if _is_media_container(local):
            raise EdnError(f"{path} contains no video frames", "pass a video with at least one frame")
        raise EdnError(f"cannot read {path} as a video", "pass a video file OpenCV/ffmpeg can decode (e.g. H.264 .mp4)")
    return cap


def probe_video(path: str) -> VideoInfo:
    """Metadata of a video; fails with EdnError if it is missing, unreadable or empty."""
    cap = _open(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise EdnError(f"{path} has no decodable frames", "pass a video with at least one frame")
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return VideoInfo(path=path, num_frames=max(count, 0), fps=float(fps) if fps and fps > 0 else 30.0,
                         height=frame.shape[0], width=frame.shape[1])
    finally:
        cap.release()


def scaled_size(height: int, width: int, max_height: int) -> tuple[int, int]:
    """(height, width) of a frame shrunk to ``max_height`` rows, aspect kept; unchanged if 0 or not smaller."""
    if max_height <= 0 or max_height >= height:
        return height, width
    return max_height, max(1, int(round(width * max_height / height)))


def iter_frames(path: str, max_frames: int | None = None, max_height: int = 0) -> Iterator[np.ndarray]:
    """Yields RGB uint8 frames one at a time, so memory stays flat in video length.

    Fails like ``probe_video`` on a missing, unreadable or empty video (on the first ``next``).
    ``max_height`` > 0 shrinks taller frames to that many rows (area interpolation, aspect kept,
    see ``scaled_size``; exact integer factors such as 1920 -> 960 are by far the cheapest);
    frames are never enlarged.
    """
    cap = _open(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise EdnError(f"{path} has no decodable frames", "pass a video with at least one frame")
        size = scaled_size(*frame.shape[:2], max_height)
        n = 0
        while max_frames is None or n < max_frames:
            if n > 0:
                ok, frame = cap.read()
                if not ok:
                    break
            if size != frame.shape[:2]:  # shrink first: the colour conversion then touches fewer pixels
                frame = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA)
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()


T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Yields ``items`` in order, produced by a background thread that runs at most ``depth`` ahead.

    Meant for decoding (``prefetch(iter_frames(path))``): OpenCV releases the GIL, so the next
    frames decode while the caller works on this one, and at most ``depth`` + 2 frames exist at
    once. An exception raised while producing is re-raised here, in order, after the items before
    it. Closing the returned generator early (``break``, an exception in the caller) stops the
    thread, closes ``items`` in that thread (e.g. releasing the video) and joins it.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = None
        try:
            source = iter(items)
            for item in source:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(("error", e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()


def _ffmpeg_probe(path: str) -> str:
    """What ffmpeg says about ``path`` (its stream list), as text."""
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", storage.local_file(path)],
                           capture_output=True, text=True, check=False)
    return probe.stderr


def has_audio(path: str) -> bool:
    """Whether ffmpeg finds an audio stream in ``path``."""
    return any(line.strip().startswith("Stream #") and "Audio:" in line
               for line in _ffmpeg_probe(path).splitlines())


def _encode_error(path: str, audio_from: str | None, detail: str) -> EdnError:
    """ffmpeg failed to write ``path``: one line with the end of what it said."""
    what = f"cannot encode {path}" + (f" with the audio of {audio_from}" if audio_from else "")
    fix = ("pass --config.transfer.keep_audio=False to write the video without sound" if audio_from
           else "check free disk space")
    return EdnError(f"{what} ({' '.join(detail.split())[-200:]})", fix)


class _Committed:
    """An output written under a temporary name beside ``path`` (``self._atomic``) until ``commit``."""

    _atomic = _tmp = None
    _done = False

    def commit(self) -> None:
        """Renames the finished temporary file onto ``path``."""
        self._done = True
        self._atomic.__exit__(None, None, None)

    def _remove_temporary(self, error: BaseException) -> None:
        if self._tmp is not None:
            self._atomic.__exit__(type(error), error, error.__traceback__)


class VideoWriter(_Committed):
    """Streams RGB frames into an H.264 mp4 that appears at ``path`` only once complete.

    With ``audio_from``, that file's first audio track is encoded (AAC) in the same ffmpeg
    pass, cut to the video's length. As a context manager it commits on success and
    removes the partial file on an exception. Several outputs that must appear together
    call ``complete`` on each (encoding finished, still under a temporary name), then
    ``commit`` on each; ``abort`` removes an uncommitted one and leaves ``path`` as it was.
    """

    def __init__(self, path: str, fps: float, quality: float = 7.0, audio_from: str | None = None):
        self.path = path
        self.fps = float(fps)
        self.quality = quality
        self.audio_from = audio_from
        self._atomic = atomic_path(path, suffix=".mp4")
        self._tmp: str | None = None
        self._gen = None
        self._size: tuple[int, int] | None = None
        self._completed = self._done = False
        self.frames_written = 0

    def open(self) -> "VideoWriter":
        """Starts the output under a temporary name beside ``path``."""
        self._tmp = self._atomic.__enter__()
        return self

    def __enter__(self) -> "VideoWriter":
        return self.open()

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        h, w = frame.shape[:2]
        if self._gen is None:
            if h % 2 or w % 2:
                raise EdnError(f"frame size {w}x{h} is odd", "H.264 (yuv420p) needs even width and height")
            self._size = (w, h)
            audio = {} if self.audio_from is None else {"audio_path": storage.local_file(self.audio_from),
                                                          "audio_codec": "aac"}
            self._gen = imageio_ffmpeg.write_frames(
                self._tmp, (w, h), fps=self.fps, codec="libx264", quality=self.quality,
                macro_block_size=2, pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                output_params=["-movflags", "+faststart"] + (["-shortest"] if self.audio_from else []), **audio)
            self._gen.send(None)
        elif (w, h) != self._size:
            raise ValueError(f"frame size changed from {self._size} to {(w, h)}")
        self._gen.send(frame)
        self.frames_written += 1

    def complete(self) -> None:
        """Finishes encoding into the temporary file (``path`` is not touched yet)."""
        self._completed = True
        if self._gen is None:
            raise EdnError(f"no frames were written to {self.path}", "nothing to encode")
        try:
            self._gen.close()
        except Exception as e:  # noqa: BLE001 - ffmpeg's own error, e.g. an audio track it cannot read
            raise _encode_error(self.path, self.audio_from, str(e)) from e

    def abort(self, error: BaseException) -> None:
        """Removes the temporary file; ``path`` is left as it was (unless already committed)."""
        if self._done:
            return
        self._done = True
        if self._gen is not None and not self._completed:
            try:
                self._gen.close()
            except Exception:  # noqa: BLE001 - cleanup: the original error is what matters
                pass
        self._remove_temporary(error)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.abort(exc)
            return False
        try:
            self.complete()
        except BaseException as e:
            self.abort(e)
            raise
        self.commit()
        return False


def write_video(path: str, frames, fps: float) -> int:
    """Writes an iterable of RGB frames atomically; returns the frame count."""
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written


class SegmentedVideoWriter(_Committed):
    """An H.264 mp4 encoded a chunk at a time into segment files under ``segments_dir``, joined
    into ``path`` (stream copy, plus ``audio_from``'s audio, cut to the video) when complete.

    The segments are what a long render keeps across an interruption: a writer made with the
    frame counts of the segments already there (``segments``) continues after them, and any
    segment file beyond them (written when the run was killed) is removed. Rendering straight
    through and rendering with interruptions give the same segments, so the same bytes. ``path``
    appears only on ``commit``; ``abort`` keeps the segments and leaves ``path`` as it was.
    """

    def __init__(self, path: str, fps: float, segments_dir: str, segments: list[int] = (), quality: float = 7.0,
                 audio_from: str | None = None):
        self.path, self.fps, self.quality, self.audio_from = path, float(fps), quality, audio_from
        self.segments_dir = segments_dir
        storage.makedirs(segments_dir)
        self.segments = list(segments)
        for name in storage.listdir(segments_dir):
            stem = name.split(".")[0]
            if not (name.endswith(".mp4") and stem.isdigit() and int(stem) < len(self.segments)):
                storage.remove(storage.join(segments_dir, name))  # an unrecorded segment, or a partial file
        self._atomic = atomic_path(path, suffix=".mp4")
        self._tmp: str | None = None
        self._done = False

    @property
    def frames_written(self) -> int:
        return sum(self.segments)

    def segment_path(self, index: int) -> str:
        return storage.join(self.segments_dir, f"{index:06d}.mp4")

    def write_chunk(self, frames: np.ndarray) -> None:
        """Encodes frames [n, H, W, 3] (uint8 RGB) as the next segment."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        n, h, w = frames.shape[:3]
        if h % 2 or w % 2:
            raise EdnError(f"frame size {w}x{h} is odd", "H.264 (yuv420p) needs even width and height")
        with atomic_path(self.segment_path(len(self.segments))) as tmp:
            gen = imageio_ffmpeg.write_frames(tmp, (w, h), fps=self.fps, codec="libx264", quality=self.quality,
                                              macro_block_size=2, pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                                              output_params=["-fflags", "+bitexact", "-flags:v", "+bitexact",
                                                             "-map_metadata", "-1"])
            gen.send(None)
            for frame in frames:
                gen.send(frame)
            gen.close()
        self.segments.append(int(n))

    def complete(self) -> None:
        """Joins the segments (and the audio) into a temporary file beside ``path``."""
        if not self.segments:
            raise EdnError(f"no frames were written to {self.path}", "nothing to encode")
        self._tmp = self._atomic.__enter__()
        with tempfile.TemporaryDirectory(prefix="edn_jax_segments_") as scratch:
            local = self.segments_dir
            if storage.is_remote(local):  # ffmpeg joins local files: the segments come down first
                local = os.path.join(scratch, "segments")
                storage.copy_tree(self.segments_dir, local)
            listing = os.path.join(scratch, "segments.txt")
            with open(listing, "w") as f:
                f.writelines(f"file '{os.path.abspath(os.path.join(local, os.path.basename(self.segment_path(i))))}'\n"
                             for i in range(len(self.segments)))
            command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0",
                       "-i", listing]
            if self.audio_from:
                command += ["-i", storage.local_file(self.audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac",
                            "-shortest"]
            command += ["-c:v", "copy", "-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart",
                        self._tmp]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise _encode_error(self.path, self.audio_from, done.stderr)

    def abort(self, error: BaseException) -> None:
        """Removes the joined file if any; ``path`` is left as it was and the segments are kept."""
        if not self._done:
            self._done = True
            self._remove_temporary(error)
