"""Paths on local disk or in an object store (``gs://``), one set of functions for both.

Every path the project reads or writes (workdirs, datasets, keypoint files, summaries, samples,
videos) goes through here, never through ``os``/``open`` directly. A local path uses the OS (the
exact semantics of rename, links and permissions the rest relies on); a URL (``scheme://...``,
e.g. ``gs://bucket/run`` on a Cloud TPU VM, or TensorFlow's in-memory ``ram://`` in tests) uses
``tf.io.gfile``, imported only when a URL is first used, so local runs of the pose stage never
import TensorFlow. Object stores have no atomic rename: ``move`` there is copy then delete, and
``fileio`` builds atomic outputs on top of it (an object appears whole or not at all).

``local_file`` gives a local copy of a remote input for the tools that read only local files
(OpenCV, ffmpeg); ``check_reachable`` turns an unreachable bucket into one error before any work.
"""

from __future__ import annotations

import atexit
import builtins
import concurrent.futures
import errno
import glob as glob_lib
import os
import shutil
import tempfile
import threading

from edn_jax.errors import EdnError

REACH_TIMEOUT_S = 60.0  # how long the first access to a bucket may take before it counts as unreachable
COPY_THREADS = 16  # concurrent object copies of copy_tree
_LOCAL_COPIES: dict[str, str] = {}


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - TensorFlow only when a URL is used (see the module docstring)

    return tf.io.gfile


def is_remote(path) -> bool:
    """Whether ``path`` is a URL (``gs://b/x``) rather than a local path (``file://`` counts as local)."""
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def _local(path) -> str:
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def join(path, *parts) -> str:
    return os.path.join(os.fspath(path), *parts)


def absolute(path) -> str:
    """An absolute local path, or the URL as it is (``os.path.abspath`` would make ``gs:/b``)."""
    path = os.fspath(path)
    return path.rstrip("/") if is_remote(path) else os.path.abspath(_local(path))


def exists(path) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.lexists(_local(path))


def isdir(path) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(_local(path))


def isfile(path) -> bool:
    if is_remote(path):
        return _gfile().exists(path) and not _gfile().isdir(path)
    return os.path.isfile(_local(path))


def makedirs(path) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(_local(path), exist_ok=True)


def listdir(path) -> list[str]:
    """Entry names (object stores list sub-directories with a trailing ``/``; it is dropped)."""
    if is_remote(path):
        return sorted({name.rstrip("/") for name in _gfile().listdir(path)})
    return sorted(os.listdir(_local(path)))


def remove(path) -> None:
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(_local(path))


def rmtree(path) -> None:
    """Removes a directory and everything in it; nothing if it does not exist."""
    if is_remote(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    else:
        shutil.rmtree(_local(path), ignore_errors=True)


def open(path, mode: str = "r", **kwargs):  # noqa: A001 - the builtin's name, on purpose
    """A file object: the builtin ``open`` for a local path, ``tf.io.gfile.GFile`` for a URL."""
    if is_remote(path):
        if "r" in mode and not _gfile().exists(path):  # GFile opens lazily; fail as ``open`` does
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if "w" in mode:
            _truncate_in_memory(path)
        return _gfile().GFile(path, mode)
    return builtins.open(_local(path), mode, **kwargs)


def _truncate_in_memory(path: str) -> None:
    """TensorFlow's in-memory ``ram://`` filesystem appends where "w" should replace (an object
    store replaces the object whole): the old file goes first there, and only there."""
    if path.startswith("ram://") and _gfile().exists(path):
        _gfile().remove(path)


def size_and_mtime(path) -> tuple[int, int]:
    """(bytes, modification time in ns)."""
    if is_remote(path):
        st = _gfile().stat(path)
        return int(st.length), int(st.mtime_nsec)
    st = os.stat(_local(path))
    return int(st.st_size), int(st.st_mtime_ns)


def glob(pattern: str) -> list[str]:
    if is_remote(pattern):
        return sorted(_gfile().glob(pattern))
    return sorted(glob_lib.glob(_local(pattern)))


def copy(source, destination) -> None:
    """Copies one file, replacing ``destination``; either side may be local or a URL."""
    if is_remote(source) or is_remote(destination):
        _truncate_in_memory(os.fspath(destination))
        _gfile().copy(os.fspath(source), os.fspath(destination), overwrite=True)
    else:
        shutil.copyfile(_local(source), _local(destination))


def copy_tree(source, destination) -> None:
    """Copies a directory's files (recursively) into ``destination``, creating it; to or from an
    object store, COPY_THREADS files at a time (pose mode's OpenPose JSON is a file per frame)."""
    pairs = []

    def collect(src_dir, dst_dir):
        makedirs(dst_dir)
        for name in listdir(src_dir):
            src, dst = join(src_dir, name), join(dst_dir, name)
            if isdir(src):
                collect(src, dst)
            else:
                pairs.append((src, dst))

    collect(source, destination)
    if not (is_remote(source) or is_remote(destination)) or len(pairs) < 2:
        for src, dst in pairs:
            copy(src, dst)
        return
    with concurrent.futures.ThreadPoolExecutor(COPY_THREADS) as pool:
        for done in [pool.submit(copy, src, dst) for src, dst in pairs]:
            done.result()  # the first failure is raised


def move(source, destination) -> None:
    """Moves a file or directory onto ``destination`` (a directory there is replaced). Locally one
    atomic rename; in an object store a copy then a delete, so a move that was interrupted can
    simply be done again (``source`` is removed last)."""
    if not (is_remote(source) or is_remote(destination)):
        if os.path.isdir(_local(destination)) and not os.path.islink(_local(destination)):
            shutil.rmtree(_local(destination))  # a directory cannot be replaced by a rename
        os.replace(_local(source), _local(destination))
        return
    if isdir(source):
        rmtree(destination)
        copy_tree(source, destination)
        rmtree(source)
    else:
        copy(source, destination)
        remove(source)


def local_file(path: str) -> str:
    """A local path with the contents of ``path``: itself if local, else a temporary copy made once
    per process (removed at exit) for the readers that need a local file (OpenCV, ffmpeg)."""
    if not is_remote(path):
        return _local(path)
    if path not in _LOCAL_COPIES:
        directory = tempfile.mkdtemp(prefix="edn_jax_input_")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        local = os.path.join(directory, os.path.basename(path.rstrip("/")))
        if isdir(path):
            copy_tree(path, local)
        else:
            copy(path, local)
        _LOCAL_COPIES[path] = local
    return _LOCAL_COPIES[path]


def check_reachable(path: str, what: str, write: bool = False, timeout_s: float | None = None) -> None:
    """EdnError unless the URL ``path`` can be reached (and, with ``write``, written: a probe object
    is created and removed), within ``timeout_s``: no network or no credentials fails here, in one
    line, before any work starts, instead of as a library's traceback hours later."""
    if not is_remote(path):
        return
    timeout_s = REACH_TIMEOUT_S if timeout_s is None else timeout_s
    outcome: dict = {}

    def probe():
        try:
            gfile = _gfile()
            gfile.exists(path)
            if write:
                marker = join(path, f".edn_write_check_{os.getpid()}")
                with gfile.GFile(marker, "w") as f:
                    f.write("edn_jax write check\n")  # an empty write creates no object
                gfile.remove(marker)
            outcome["ok"] = True
        except Exception as e:  # noqa: BLE001 - whatever the filesystem raises is the reason
            outcome["error"] = e

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    fix = ("check the machine's network and credentials (on a Cloud TPU VM the service account needs access "
           "to the bucket; elsewhere run `gcloud auth application-default login`), or use a local path")
    if thread.is_alive():
        raise EdnError(f"{what} {path} cannot be reached (no answer in {timeout_s:.0f} s)", fix)
    if "error" in outcome:
        error = outcome["error"]
        reason = " ".join(str(getattr(error, "message", "") or error).split())
        raise EdnError(f"{what} {path} cannot be {'written' if write else 'reached'} "
                       f"({type(error).__name__}: {reason[:200]})", fix)
