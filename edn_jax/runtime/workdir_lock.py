"""One writer per workdir, and one builder per dataset directory.

Every mode writes into its ``--workdir``, and two runs writing one workdir at once (a command
launched twice, a scheduled job overlapping a manual one) would interleave checkpoints, summaries
and videos. ``workdir_lock`` is held for a whole run:

* a local workdir: ``fcntl.flock`` on ``<workdir>/.edn_jax.lock``, which the kernel releases when
  the process dies, so kill -9 leaves no stale lock (only the file, which the next run takes). The
  holder writes who it is (pid, host, mode, start time) into the file and removes it when done; a
  second run reads it and stops with one ``EdnError`` line, having written nothing;
* a ``gs://`` workdir (no file locks in an object store): the object ``<workdir>/.edn_jax.lock``
  holds the owner and a heartbeat the owner rewrites every ``HEARTBEAT_S``. A second run stops while
  the heartbeat is fresh, and takes the lock over (saying so) once it is older than ``STALE_AFTER_S``;
* a multi-host job shares one workdir on purpose: process 0 holds the lock, the others pass.

``build_lock`` serialises building one dataset directory (``build.data_dir``, shared between runs
with different workdirs): the second run waits for the first's build, with a message, and then
finds the dataset built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid

from edn_jax.errors import EdnError
from edn_jax.runtime import storage

LOCK_NAME = ".edn_jax.lock"
BUILD_LOCK_NAME = ".edn_jax_build.lock"
HEARTBEAT_S = 30.0     # a gs:// lock's owner rewrites its heartbeat this often
STALE_AFTER_S = 180.0  # a gs:// lock whose heartbeat is older than this is taken over


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written into it."""

    pid: int
    host: str
    mode: str
    started: str
    token: str = ""
    heartbeat: float = 0.0  # seconds since the epoch (gs:// locks)

    @classmethod
    def me(cls, mode: str) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), mode, time.strftime("%Y-%m-%d %H:%M:%S"), uuid.uuid4().hex,
                   time.time())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, mode {self.mode}, started {self.started}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        try:
            fields = json.loads(text)
            return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})
        except (ValueError, TypeError, KeyError):
            return None


def _in_use(workdir: str, holder: Holder | None) -> EdnError:
    who = holder.describe() if holder is not None else "its owner is not recorded yet"
    return EdnError(f"{storage.absolute(workdir)} is in use by another edn_jax run ({who})",
                    "wait for it or use another --workdir")


def _open_locked(path: str, blocking: bool) -> int | None:
    """An fd of ``path`` (created if missing) holding an exclusive flock, or None when another
    process holds it and ``blocking`` is False. Retries when the file was replaced meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was removed after we opened it: lock the one that is there now


def _read_fd(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")


@contextlib.contextmanager
def _local_lock(workdir: str, mode: str):
    path = storage.absolute(workdir)
    created = not os.path.exists(path)
    os.makedirs(path, exist_ok=True)
    lock_path = os.path.join(path, LOCK_NAME)
    fd = _open_locked(lock_path, blocking=False)
    if fd is None:
        try:
            with open(lock_path) as f:
                holder = Holder.parse(f.read())
        except OSError:
            holder = None
        raise _in_use(workdir, holder)
    try:
        text = Holder.me(mode).to_json().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        yield
    finally:
        # The lock file goes while still locked (a run that opened it meanwhile sees it replaced and
        # locks the new one), and a workdir this run created and left empty goes too, as before.
        with contextlib.suppress(OSError):
            os.remove(lock_path)
            if created and not os.listdir(path):
                os.rmdir(path)
        os.close(fd)  # releases the flock


class _Heartbeat:
    """Rewrites a gs:// lock object every ``HEARTBEAT_S`` while the run lasts."""

    def __init__(self, path: str, holder: Holder):
        self.path, self.holder = path, holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edn_jax workdir heartbeat", daemon=True)

    def write(self) -> None:
        self.holder = dataclasses.replace(self.holder, heartbeat=time.time())
        with storage.open(self.path, "w") as f:
            f.write(self.holder.to_json())

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried; the run goes on
                self.write()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _read_holder(path: str) -> Holder | None:
    try:
        with storage.open(path) as f:
            return Holder.parse(f.read())
    except Exception:  # noqa: BLE001 - gone between the check and the read, or unreadable: no owner
        return None


@contextlib.contextmanager
def _remote_lock(workdir: str, mode: str):
    path = storage.join(workdir, LOCK_NAME)
    current = _read_holder(path) if storage.exists(path) else None
    if current is not None:
        age = time.time() - current.heartbeat
        if age < STALE_AFTER_S:
            raise _in_use(workdir, current)
        print(f"taking over the workdir lock of {current.describe()}: its last heartbeat was {age:.0f} s ago "
              f"(more than {STALE_AFTER_S:.0f} s)", file=sys.stderr)
    storage.makedirs(workdir)
    beat = _Heartbeat(path, Holder.me(mode))
    beat.write()
    written = _read_holder(path)  # an object store has no atomic create: the last writer owns it
    if written is None or written.token != beat.holder.token:
        raise _in_use(workdir, written)
    beat.start()
    try:
        yield
    finally:
        beat.stop()
        if (_read_holder(path) or beat.holder).token == beat.holder.token:
            with contextlib.suppress(Exception):
                storage.remove(path)


@contextlib.contextmanager
def workdir_lock(workdir: str, mode: str, process_index: int = 0):
    """Holds ``workdir`` for this run (module docstring); EdnError when another run holds it."""
    if process_index != 0:
        yield
        return
    lock = _remote_lock if storage.is_remote(workdir) else _local_lock
    with lock(workdir, mode):
        yield


@contextlib.contextmanager
def build_lock(dataset_dir: str):
    """Held while building the dataset at ``dataset_dir`` (a local directory; a gs:// one is not
    locked). A second run waits here, saying so, until the first's build is done."""
    if storage.is_remote(dataset_dir):
        yield
        return
    parent = os.path.dirname(storage.absolute(dataset_dir))
    os.makedirs(parent, exist_ok=True)
    lock_path = os.path.join(parent, BUILD_LOCK_NAME)
    fd = _open_locked(lock_path, blocking=False)
    if fd is None:
        print(f"waiting for another edn_jax run that is building {storage.absolute(dataset_dir)}", flush=True)
        fd = _open_locked(lock_path, blocking=True)
    try:
        yield
    finally:
        os.close(fd)
