"""Atomic output files: a user's files are either complete or absent, never half-written.

Every output goes to a hidden temporary file beside its destination and is
renamed into place only once complete (``os.replace`` is atomic on POSIX), so an
interrupted or failed run leaves no file that looks finished and never damages
an existing one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from edn_jax.errors import EdnError


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yields a temporary path beside ``path``; renames it onto ``path`` on success only."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    suffix = suffix if suffix is not None else os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".partial" + suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private to this user
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


COMMIT_MARKER = "COMMITTING"


class StagedOutputs:
    """A set of outputs (files and directories) that appear in ``workdir`` together or not at all.

    Each is written under ``workdir/.<name>.partial/`` and ``commit`` moves them into place, a
    rename each, after writing a marker; so an interrupted run (kill -9, a full disk) leaves no
    output that looks complete: ``recover`` at the next start removes a staging directory without
    the marker (nothing was committed) and finishes the moves of one with it. Every destination is
    checked before anything is written (``check``): one taken by something of the other kind (a
    directory named ``stick.mp4``) is an error, as is any existing one without ``overwrite``.
    """

    def __init__(self, workdir: str, name: str, outputs: dict[str, tuple[str, str]], overwrite: bool):
        """``outputs``: {key: (file name in the workdir, "file" | "dir")}."""
        self.workdir, self.overwrite = workdir, overwrite
        self.staging = os.path.join(workdir, f".{name}.partial")
        self.outputs = dict(outputs)

    def final(self, key: str) -> str:
        return os.path.join(self.workdir, self.outputs[key][0])

    def path(self, key: str) -> str:
        """Where to write output ``key`` while the set is incomplete."""
        return os.path.join(self.staging, self.outputs[key][0])

    def recover(self) -> None:
        """Finishes an interrupted commit, or removes an interrupted run's staged outputs."""
        if not os.path.isdir(self.staging):
            return
        if os.path.exists(os.path.join(self.staging, COMMIT_MARKER)):
            self._move_all()
        else:
            shutil.rmtree(self.staging)

    def existing(self) -> list[str]:
        """The destinations that exist already."""
        return [self.final(k) for k in self.outputs if os.path.lexists(self.final(k))]

    def check(self, what: str) -> None:
        """EdnError (before any work) for a destination taken by the other kind, or by anything
        without ``overwrite``; ``what`` names the outputs in the message."""
        for key, (name, kind) in self.outputs.items():
            final = self.final(key)
            if not os.path.lexists(final):
                continue
            wrong = os.path.isdir(final) if kind == "file" else not os.path.isdir(final)
            if wrong or os.path.islink(final):
                taken = "a directory" if os.path.isdir(final) else "a link" if os.path.islink(final) else "a file"
                raise EdnError(f"{final} is {taken}, where {what} writes its {name} {kind}",
                               "move it away or choose another --workdir (nothing was written)")
        existing = self.existing()
        if existing and not self.overwrite:
            raise EdnError(f"{self.workdir} already holds {what} outputs ({os.path.basename(existing[0])})",
                           "choose another --workdir or pass --config.overwrite=True")

    def start(self) -> None:
        os.makedirs(self.staging, exist_ok=True)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self) -> None:
        """Moves every staged output into place (replacing what ``overwrite`` allows)."""
        with open(os.path.join(self.staging, COMMIT_MARKER), "w"):
            pass
        self._move_all()

    def _move_all(self) -> None:
        for key, (_, kind) in self.outputs.items():
            staged, final = self.path(key), self.final(key)
            if not os.path.lexists(staged):
                continue  # moved before an interruption, or not produced (e.g. no overlay for JSON input)
            if kind == "dir" and os.path.isdir(final):
                shutil.rmtree(final)  # a directory cannot be replaced by a rename
            os.replace(staged, final)
        shutil.rmtree(self.staging)
