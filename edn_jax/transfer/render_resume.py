"""What an interrupted transfer keeps of each video, so a rerun continues from its last chunk.

Per video, under ``<workdir>/.transfer_partial/<name>/``: the encoded segments of each output
(``video.SegmentedVideoWriter``), and after each chunk the renderer's carry (the previous output
and stick figure the next frame is rendered from) and the self score's running state, named by
the frames done, then ``state.json`` pointing at them, written last and atomically. A kill at
any moment leaves a state that names only complete files; anything newer is removed on resume.
The state carries a fingerprint of everything that decides the output (the source file, the
model, the sizes and settings); a rerun with a different one starts the video afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from edn_jax import filenames
from edn_jax.runtime import storage
from edn_jax.runtime.fileio import atomic_path

STATE_FILE = "state.json"


def partial_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, filenames.TRANSFER_PARTIAL, name)


def _file_identity(path: str) -> list:
    """(size, mtime) of a source file, or of a directory's entries (OpenPose JSON); [] if absent."""
    if not path or not storage.exists(path):
        return []
    if storage.isdir(path):
        return sorted((name, *storage.size_and_mtime(storage.join(path, name))) for name in storage.listdir(path))
    return list(storage.size_and_mtime(path))


def fingerprint(config, source_label: str, source_path: str, model_stage: str, model_steps: int,
                slots: int, chunk: int) -> str:
    """What decides a video's output bytes, hashed: a resumed render must agree on all of it."""
    described = {
        "source": source_label, "file": _file_identity(source_path), "model": storage.absolute(
            config.transfer.model_workdir), "stage": model_stage, "steps": model_steps, "slots": slots,
        "chunk": chunk, "transfer": config.transfer.to_dict(), "pose": config.pose.to_dict(),
        "max_frames": config.input.max_frames, "dtype": config.model.dtype, "synthetic": config.synthetic.to_dict(),
    }
    described["transfer"].pop("source", None)  # the list of sources may change around this one
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


@dataclasses.dataclass
class Saved:
    """A video's progress as the last completed chunk left it."""

    frames: int
    segments: dict[str, list[int]]   # output name -> frame count of each segment
    carry: tuple[np.ndarray, np.ndarray] | None
    score: dict[str, np.ndarray] | None


class ResumeState:
    """One video's resume files (see the module docstring)."""

    def __init__(self, directory: str, key: str):
        self.directory, self.key = directory, key

    def segments_dir(self, output: str) -> str:
        return storage.join(self.directory, output)

    def load(self) -> Saved | None:
        """The saved progress, or None (nothing saved, or saved for other inputs: then removed)."""
        path = storage.join(self.directory, STATE_FILE)
        try:
            with storage.open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = None
        if state is None or state.get("fingerprint") != self.key:
            self.discard()
            return None
        frames = int(state["frames"])
        keep = {f"carry_{frames:09d}.npz", f"score_{frames:09d}.npz", STATE_FILE}
        for name in storage.listdir(self.directory):
            if storage.isfile(storage.join(self.directory, name)) and name not in keep:
                storage.remove(storage.join(self.directory, name))  # newer than the state: a killed chunk's
        carry = score = None
        if storage.exists(self._path("carry", frames)):
            with storage.open(self._path("carry", frames), "rb") as f, np.load(f) as z:
                carry = (z["prev"], z["prev_label"])
        if storage.exists(self._path("score", frames)):
            with storage.open(self._path("score", frames), "rb") as f, np.load(f) as z:
                score = {k: z[k] for k in z.files}
        return Saved(frames, {k: list(v) for k, v in state["segments"].items()}, carry, score)

    def _path(self, kind: str, frames: int) -> str:
        return storage.join(self.directory, f"{kind}_{frames:09d}.npz")

    def save(self, frames: int, segments: dict[str, list[int]], carry, score: dict[str, np.ndarray] | None) -> None:
        """Records a completed chunk: carry and score files first, then the state naming them."""
        storage.makedirs(self.directory)
        if carry is not None:
            with atomic_path(self._path("carry", frames)) as tmp, open(tmp, "wb") as f:
                np.savez(f, prev=np.asarray(carry[0]), prev_label=np.asarray(carry[1]))
        if score is not None:
            with atomic_path(self._path("score", frames)) as tmp, open(tmp, "wb") as f:
                np.savez(f, **score)
        with atomic_path(storage.join(self.directory, STATE_FILE)) as tmp, open(tmp, "w") as f:
            json.dump({"fingerprint": self.key, "frames": frames, "segments": segments}, f)
        for name in storage.listdir(self.directory):
            stem = name.rsplit(".", 1)[0]
            if name.endswith(".npz") and not stem.endswith(f"_{frames:09d}"):
                storage.remove(storage.join(self.directory, name))

    def discard(self) -> None:
        storage.rmtree(self.directory)
        parent = os.path.dirname(self.directory)
        if storage.isdir(parent) and not storage.listdir(parent):
            storage.rmtree(parent)
