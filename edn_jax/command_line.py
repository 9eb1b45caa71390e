"""The command line's own checks: every mistake in the flags or the config file is one ``error:`` line.

absl and ml_collections report a bad flag as a traceback or an absl ``FATAL`` line with status 1
(an unknown ``--config.`` field is a ``KeyError``, a config file with a syntax error a
``SyntaxError``). ``parse_flags`` is ``edn_jax.main``'s flags parser: it loads the config file
itself first (present, valid Python, with a ``get_config`` that runs), checks that every
``--config.`` override names a field (suggesting the nearest ones), then lets absl parse, turning
its errors into ``EdnError``; ``check_workdir`` refuses a workdir that cannot be written before
any work starts.
"""

from __future__ import annotations

import difflib
import errno
import importlib.util
import logging as std_logging
import os
import shutil
import sys
import tempfile
import traceback

from absl import flags
from flax import traverse_util

from edn_jax.errors import EdnError
from edn_jax.runtime import storage

CONFIG_FLAG = "config"


def flag_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in ``argv`` (the last one given), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def load_config_file(spec: str):
    """``get_config()`` of the config file ``spec`` (``path`` or ``path:argument``), or EdnError."""
    path, *argument = spec.split(":", 1)
    fix = "pass a config file, e.g. --config configs/demo.py (configs/default.py lists which does what)"
    if not os.path.exists(path):
        raise EdnError(f"config file {path} does not exist", fix)
    if not os.path.isfile(path):
        raise EdnError(f"config file {path} is not a file", fix)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        code = compile(source, path, "exec")
    except SyntaxError as e:
        raise EdnError(f"config file {path} has a syntax error at line {e.lineno}: {e.msg}", "fix the file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise EdnError(f"config file {path} cannot be read ({e})", fix) from e
    spec_ = importlib.util.spec_from_file_location("edn_jax_checked_config", path)
    module = importlib.util.module_from_spec(spec_)
    try:
        exec(code, module.__dict__)  # noqa: S102 - the user's own config file, as ml_collections runs it
    except Exception as e:  # noqa: BLE001 - whatever the file raises is the file's problem
        raise EdnError(f"config file {path} fails when loaded ({_where(e, path)})", "fix the file") from e
    if not callable(getattr(module, "get_config", None)):
        raise EdnError(f"config file {path} has no get_config() function",
                       "define get_config() returning an ml_collections.ConfigDict (see configs/demo.py)")
    try:
        config = module.get_config(*argument)
    except TypeError as e:
        if argument and "positional argument" in str(e):
            raise EdnError(f"config file {path} takes no argument after the colon (got {argument[0]!r})",
                           f"use --config {path}") from e
        raise EdnError(f"{spec}: get_config() fails ({_where(e, path)})", "fix the file") from e
    except Exception as e:  # noqa: BLE001
        if argument:
            raise EdnError(f"{spec}: get_config({argument[0]!r}) fails ({_where(e, path)})",
                           "the text after the colon is passed to get_config(); the file's docstring says what "
                           "it takes") from e
        raise EdnError(f"{spec}: get_config() fails ({_where(e, path)})", "fix the file") from e
    if config is None or not hasattr(config, "to_dict"):
        raise EdnError(f"config file {path}: get_config() returned {type(config).__name__}, not a ConfigDict",
                       "return the ml_collections.ConfigDict it builds")
    return config


def _where(error: BaseException, path: str) -> str:
    """``Type: message`` of an exception, with the config file's line when the traceback has one."""
    line = next((f" at line {frame.lineno}" for frame in reversed(traceback.extract_tb(error.__traceback__))
                 if os.path.abspath(frame.filename) == os.path.abspath(path)), "")
    message = " ".join(str(error).split())
    return f"{type(error).__name__}{line}: {message}" if message else f"{type(error).__name__}{line}"


def override_names(argv: list[str]) -> list[str]:
    """The config fields named by ``--config.<field>[=value]`` (and absl's ``--noconfig.<field>``)."""
    names = []
    for arg in argv:
        for prefix in (f"--{CONFIG_FLAG}.", f"--no{CONFIG_FLAG}."):
            if arg.startswith(prefix):
                names.append(arg[len(prefix):].split("=", 1)[0])
    return names


def check_overrides(config, names: list[str]) -> None:
    """EdnError for the first name that is not a field of ``config``, with the nearest valid names."""
    fields = list(traverse_util.flatten_dict(config.to_dict(), sep="."))
    sections = {".".join(f.split(".")[:i]) for f in fields for i in range(1, f.count(".") + 1)}
    for name in names:
        if name in fields or name in sections:
            continue
        near = difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
        if not near:  # a misspelt last part: the fields of the same section
            section = name.rsplit(".", 1)[0] if "." in name else ""
            near = [f for f in fields if section and f.startswith(section + ".")][:3]
        fix = f"did you mean {', '.join('--config.' + n for n in near)}?" if near else \
            "configs/default.py lists every field"
        raise EdnError(f"--config.{name}: the config has no field {name}", fix)


def _absl_message(error: flags.Error) -> EdnError:
    text = " ".join(str(error).split())
    if "--workdir" in text and "must have a value" in text:
        return EdnError("--workdir is missing", "pass a directory for the outputs, e.g. --workdir runs/me")
    if "--config" in text and "must have a value" in text:
        return EdnError("--config is missing", "pass a config file, e.g. --config configs/demo.py")
    if text.startswith("Unknown command line flag"):
        return EdnError(text.rstrip("."), "flags are --config FILE, --workdir DIR and --config.<field>=VALUE")
    if text.startswith("flag --config."):  # a value of the wrong type: "flag --config.x=abc: invalid literal ..."
        flag, _, why = text[len("flag "):].partition(": ")
        return EdnError(f"{flag}: {why}", "give a value of the field's type (configs/default.py shows each default)")
    return EdnError(text, "run with --helpfull for the flags")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's ``flags_parser`` for ``app.run``: the config file and overrides checked first; any
    problem is one ``error:`` line and exit status 2."""
    try:
        spec = flag_value(argv[1:], CONFIG_FLAG)
        if spec is not None:
            check_overrides(load_config_file(spec), override_names(argv[1:]))
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            raise _absl_message(e) from e
    except EdnError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def check_workdir(workdir: str) -> None:
    """EdnError unless ``workdir`` is a directory this process can write, or can be created as one;
    creates nothing (a job that stops at its first check leaves no empty directory behind). A URL
    (``gs://``) is checked by writing and removing a probe object, within a time limit."""
    if not workdir:
        raise EdnError("--workdir is empty", "pass a directory for the outputs")
    if storage.is_remote(workdir):
        storage.check_reachable(workdir, "--workdir", write=True)
        if storage.isfile(workdir):
            raise EdnError(f"--workdir {workdir} is a file, not a directory", "pass a directory path")
        return
    path = storage.absolute(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise EdnError(f"--workdir {path} is a file, not a directory", "pass a directory path (it is created if missing)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise EdnError(f"--workdir {path} cannot be created ({existing} is a file)",
                       "pass a directory path on a disk you can write")
    try:  # a real write: os.access says yes to root on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=".edn_write_check_", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        verb = "is not writable" if existing == path else f"cannot be created ({existing} is not writable)"
        raise EdnError(f"--workdir {path} {verb} ({e.strerror})", "pass a directory on a disk you can write") from e


WRITTEN_FIELDS = ("build.data_dir",)  # config fields naming a place the job writes (beside the workdir)


def check_remote_paths(config) -> None:
    """EdnError for the first URL in the config (any string field, or item of a comma list, such as
    ``data.dataset_dir=gs://...`` or ``transfer.source``) that cannot be reached, before any work."""
    for field, value in traverse_util.flatten_dict(config.to_dict(), sep=".").items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            for path in (item.split(",") if isinstance(item, str) else ()):
                path = path.strip().removeprefix("@")  # transfer.source's @LIST names a list file
                if storage.is_remote(path):
                    storage.check_reachable(path, f"--config.{field}", write=field in WRITTEN_FIELDS)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def disk_full_message(error: BaseException, workdir: str | None) -> str | None:
    """One line for an error caused by a full disk (ENOSPC anywhere in its chain, or the text of
    one wrapped by a library), naming the path and the space left; None for any other error."""
    full = next((e for e in _chain(error) if (isinstance(e, OSError) and e.errno == errno.ENOSPC)
                 or _is_disk_full_text(str(e))), None)
    if full is None:
        return None
    path = getattr(full, "filename", None) or workdir or "."
    where = os.path.abspath(path)
    probe = where
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe or ".").free
    return str(EdnError(f"no space left on the device holding {where} ({free / 2**20:.1f} MiB free)",
                        "free some space and rerun the same command: completed outputs and checkpoints are "
                        "kept, and nothing partial is used"))


def _is_disk_full_text(text: str) -> bool:
    return "No space left on device" in text or "RESOURCE_EXHAUSTED: Error writing" in text


class DiskFullLogFilter:
    """Drops library log records of a write that failed for a full disk (Orbax logs each failed
    background write with its traceback, hundreds of lines); ``disk_full_message`` reports it once."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() + ("" if exc is None else " ".join(str(e) for e in _chain(exc)))
        return not _is_disk_full_text(text)


def quiet_disk_full_noise() -> None:
    """Installs ``DiskFullLogFilter`` on absl's logger, and drops the "Event loop is closed" errors
    that TensorStore's callbacks raise into Orbax's closed event loops after such a failure."""
    std_logging.getLogger("absl").addFilter(DiskFullLogFilter())
    previous = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    sys.unraisablehook = hook
