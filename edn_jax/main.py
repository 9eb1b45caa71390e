"""Command line entry point.

  python -m edn_jax.main --config configs/<x>.py --workdir DIR [--config.field=value ...]

The job is chosen by ``config.mode``. A problem with the user's input is printed
as one ``error: ...`` line and exits with status 2. A run holds its workdir for its whole
length (``edn_jax.runtime.workdir_lock``): a second run into the same workdir is refused. Each mode's module is imported only
when it runs (TensorFlow, TFDS and MediaPipe take seconds to import; pose mode needs
none of TensorFlow). Train, evaluate, transfer and ablation runs end by rewriting the workdir's
results page, ``<workdir>/report/index.html`` (``edn_jax.evaluation.report``), and listing themselves on it;
dance mode (``edn_jax.dance``) runs the others' phases in turn and writes the page as its last.
"""

from __future__ import annotations

import datetime
import os
import shlex
import sys
import time

# Quiet TensorFlow/MediaPipe C++ logs before anything imports them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from edn_jax import command_line  # noqa: E402
from edn_jax.errors import EdnError  # noqa: E402
from edn_jax.runtime import storage, workdir_lock  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this job's outputs (created if missing).")
flags.mark_flags_as_required(["config", "workdir"])


def _pose(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax.pose import pipeline

    outputs = pipeline.run_pose_mode(config, workdir)
    print("pose outputs:")
    for name, path in outputs.items():
        print(f"  {name:14s} {storage.absolute(path)}")


def _build(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax.data import build, dataset

    target = build.run_build_mode(config, workdir)
    train, val = dataset.open_split(target, "train"), dataset.open_split(target, "validation")
    print(f"dataset built: {storage.absolute(target)}")
    print(f"  train {len(train.source)} frames, validation {len(val.source)} frames")
    for v in train.metadata["videos"]:
        print(f"  {v['name']}: {v['frames']} frames, {v['frames_dropped_no_person']} dropped (no person)")


def _train(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax.training import train

    result = train.train_and_evaluate(config, workdir)
    print("training outputs:")
    for name in ("checkpoints", "samples", "dataset"):
        print(f"  {name:12s} {storage.absolute(result[name])}")
    print(f"  {'tensorboard':12s} {storage.absolute(storage.join(workdir, 'tensorboard'))}")
    print(f"  {'summary':12s} {storage.absolute(storage.join(workdir, 'train_summary.json'))}")


def _transfer(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax.transfer import rendering

    rendering.run_transfer_mode(config, workdir, overrides)  # prints each source's outputs as it reports


def _evaluate(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax.evaluation import evaluate

    evaluate.run_evaluate_mode(config, workdir, overrides)  # prints the scores and where they were written


def _ablation(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax import ablation

    ablation.run_ablation(config, workdir)  # prints the table and where it was written


def _dance(config, workdir: str, overrides=(), command: str = "") -> None:
    from edn_jax import dance

    dance.run_dance_mode(config, workdir, overrides, command)  # its last phase writes the results page


MODES = {"pose": _pose, "build": _build, "train": _train, "evaluate": _evaluate, "transfer": _transfer,
         "ablation": _ablation, "dance": _dance}
PAGE_MODES = ("train", "evaluate", "transfer", "ablation")  # the modes whose results the page shows


def _update_page(config, workdir: str, command: str, started: datetime.datetime, seconds: float) -> None:
    """Lists this run on the workdir's results page and rewrites the page (process 0 only)."""
    from edn_jax.evaluation import report

    report.record_run(workdir, report.RunRecord(config.mode, command, started.strftime("%Y-%m-%d %H:%M:%S UTC"),
                                                seconds, config.to_json_best_effort(indent=2)))
    print(f"results page: {storage.absolute(report.write_page(workdir))}")


def run(config, workdir: str, overrides=(), command: str = "edn_jax.main.run(config, workdir) from Python") -> None:
    """Runs ``config.mode``; importable so tests and notebooks need no subprocess. ``overrides``: the
    ``--config.*`` fields named on the command line (a trained model's own settings are kept unless
    one of them contradicts it); ``command``: how the run was started, for the results page."""
    mode = MODES.get(config.mode)
    if mode is None:
        raise EdnError(f"config.mode={config.mode!r} is not a mode", f"use one of: {', '.join(MODES)}")
    command_line.check_workdir(workdir)
    command_line.check_remote_paths(config)
    with workdir_lock.workdir_lock(workdir, config.mode, _process_index()):  # one writer per workdir
        started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
        mode(config, workdir, tuple(overrides), command)
        if config.mode in PAGE_MODES and _process_index() == 0:
            _update_page(config, workdir, command, started, time.perf_counter() - t0)


def _process_index() -> int:
    """This process's index in a multi-host job (0 alone); JAX is not imported for it."""
    jax = sys.modules.get("jax")
    return jax.process_index() if jax is not None and jax.distributed.is_initialized() else 0


def main(argv) -> None:
    logging.set_verbosity(logging.ERROR)  # TFDS logs every custom build config at WARNING
    command_line.quiet_disk_full_noise()
    try:
        if len(argv) > 1:
            raise EdnError(f"unexpected argument{'s' if len(argv) > 2 else ''} {' '.join(argv[1:])!r}",
                           "flags take the form --name=value (--config FILE, --workdir DIR, --config.<field>=VALUE)")
        from edn_jax.runtime import distributed

        distributed.maybe_initialize()  # multi-host runs join before anything touches a JAX backend
        run(_CONFIG.value, _WORKDIR.value, config_flags.get_override_values(flags.FLAGS["config"]),
            shlex.join(["python", "-m", "edn_jax.main", *sys.argv[1:]]))  # the whole command line as typed
    except EdnError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a full disk is the user's to fix; anything else is a bug
        problem = command_line.disk_full_message(e, _WORKDIR.value)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; completed outputs are kept, partial files were removed", file=sys.stderr)
        sys.exit(130)


def cli() -> None:
    """The ``edn-jax`` command of an installed package (``pip install -e .``): ``python -m edn_jax.main``."""
    app.run(main, flags_parser=command_line.parse_flags)


if __name__ == "__main__":
    cli()
