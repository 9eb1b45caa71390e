"""Atomic output files: a user's files are either complete or absent, never half-written.

Every output is written under a hidden temporary name and put in place only once complete. On
local disk that is a temporary file beside the destination renamed onto it (``os.replace`` is
atomic on POSIX); in an object store (``gs://``), where rename is a copy, it is a local temporary
file uploaded as one object, which the store makes visible whole or not at all. So an interrupted
or failed run leaves no file that looks finished and never damages an existing one. Paths go
through ``edn_jax.runtime.storage``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from edn_jax.errors import EdnError
from edn_jax.runtime import storage


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yields a local temporary path; on success only, it becomes ``path`` (renamed locally,
    uploaded as one object to a URL)."""
    remote = storage.is_remote(path)
    directory = os.path.dirname(storage.absolute(path)) or "."
    storage.makedirs(directory)
    suffix = suffix if suffix is not None else os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".partial" + suffix,
                               dir=None if remote else directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private to this user
    try:
        yield tmp
        if remote:
            storage.copy(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


COMMIT_MARKER = "COMMITTING"


class StagedOutputs:
    """A set of outputs (files and directories) that appear in ``workdir`` together or not at all.

    Each is written under ``workdir/.<name>.partial/`` and ``commit`` moves them into place after
    writing a marker; so an interrupted run (kill -9, a full disk, a preempted VM) leaves no output
    that looks complete: ``recover`` at the next start removes a staging directory without the
    marker (nothing was committed) and finishes the moves of one with it. In an object store the
    outputs are written to a local temporary directory first (ffmpeg and OpenCV write only local
    files) and ``commit`` uploads them into the staging directory before the marker; the moves there
    are copies, which ``recover`` may simply repeat. Every destination is checked before anything
    is written (``check``): one taken by something of the other kind (a directory named
    ``stick.mp4``) is an error, as is any existing one without ``overwrite``.
    """

    def __init__(self, workdir: str, name: str, outputs: dict[str, tuple[str, str]], overwrite: bool):
        """``outputs``: {key: (file name in the workdir, "file" | "dir")}."""
        self.workdir, self.overwrite = workdir, overwrite
        self.remote = storage.is_remote(workdir)
        self.staging = storage.join(workdir, f".{name}.partial")
        self.outputs = dict(outputs)
        self._local: str | None = None  # where a remote set is written until it is committed

    def final(self, key: str) -> str:
        return storage.join(self.workdir, self.outputs[key][0])

    def path(self, key: str) -> str:
        """Where to write output ``key`` while the set is incomplete (a local path)."""
        return os.path.join(self._local if self.remote else self.staging, self.outputs[key][0])

    def recover(self) -> None:
        """Finishes an interrupted commit, or removes an interrupted run's staged outputs."""
        if not storage.isdir(self.staging):
            return
        if storage.exists(storage.join(self.staging, COMMIT_MARKER)):
            self._move_all()
        else:
            storage.rmtree(self.staging)

    def existing(self) -> list[str]:
        """The destinations that exist already."""
        return [self.final(k) for k in self.outputs if storage.exists(self.final(k))]

    def check(self, what: str) -> None:
        """EdnError (before any work) for a destination taken by the other kind, or by anything
        without ``overwrite``; ``what`` names the outputs in the message."""
        for key, (name, kind) in self.outputs.items():
            final = self.final(key)
            if not storage.exists(final):
                continue
            is_dir, is_link = storage.isdir(final), not self.remote and os.path.islink(final)
            wrong = is_dir if kind == "file" else not is_dir
            if wrong or is_link:
                taken = "a directory" if is_dir else "a link" if is_link else "a file"
                raise EdnError(f"{final} is {taken}, where {what} writes its {name} {kind}",
                               "move it away or choose another --workdir (nothing was written)")
        existing = self.existing()
        if existing and not self.overwrite:
            raise EdnError(f"{self.workdir} already holds {what} outputs ({os.path.basename(existing[0])})",
                           "choose another --workdir or pass --config.overwrite=True")

    def start(self) -> None:
        if self.remote:
            self._local = tempfile.mkdtemp(prefix="edn_jax_staged_")
        else:
            storage.makedirs(self.staging)

    def discard(self) -> None:
        self._drop_local()
        storage.rmtree(self.staging)

    def _drop_local(self) -> None:
        if self._local is not None:
            storage.rmtree(self._local)
            self._local = None

    def commit(self) -> None:
        """Moves every staged output into place (replacing what ``overwrite`` allows)."""
        if self.remote:  # the outputs go up first; the marker says they are all there
            for key, (name, kind) in self.outputs.items():
                if os.path.lexists(self.path(key)):
                    (storage.copy_tree if kind == "dir" else storage.copy)(
                        self.path(key), storage.join(self.staging, name))
        with storage.open(storage.join(self.staging, COMMIT_MARKER), "w") as f:
            f.write("every output is staged\n")  # not empty: tf.io.gfile creates no file for no write
        self._move_all()
        self._drop_local()

    def _move_all(self) -> None:
        for name, _ in self.outputs.values():
            staged, final = storage.join(self.staging, name), storage.join(self.workdir, name)
            if not storage.exists(staged):
                continue  # moved before an interruption, or not produced (e.g. no overlay for JSON input)
            storage.move(staged, final)
        storage.rmtree(self.staging)
