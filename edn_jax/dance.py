"""Dance mode: one command from the target's video and the sources to the dance videos and the results page.

  python -m edn_jax.main --config configs/dance.py --workdir runs/me \\
      --config.dance.target=me.mp4 --config.dance.source=dancer.mp4

The phases, in order (``PHASES``), each writing where the single modes write:

1. pose on the target (``pose/``: keypoints, stick-figure and overlay videos; pose mode);
2. the dataset (``tfds/``; build mode, from those keypoints, not a second detection), at a frame
   size whose longer side is ``dance.long_side`` and whose aspect is the target's as displayed;
3. training (``checkpoints/``, ``samples/``, ``tensorboard/``): the global stage, then the face stage
   when the target's face is seen in enough frames. With ``dance.train_minutes`` the steps come from
   the step rate measured after compilation (``plan_steps``), so each schedule ends on time;
4. the held-out evaluation (``evaluation/<stage>/``; evaluate mode);
5. transfer of every source with its side-by-side (``videos/``; transfer mode). A source that fails
   is reported and the others are still rendered;
6. the results page (``report/index.html``).

Rerunning the same command after Ctrl-C or kill -9 continues from the phase (and the training step)
where it stopped: ``dance/state.json`` records the choices made (frame size, stages, steps) and each
finished phase with its wall time, and every phase's outputs appear complete or not at all.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import time

import numpy as np

from edn_jax import filenames
from edn_jax.data import build, dataset
from edn_jax.errors import EdnError
from edn_jax.evaluation import evaluate, report
from edn_jax.models import checkpoints
from edn_jax.pose import layout, pipeline
from edn_jax.runtime import storage, video
from edn_jax.runtime.fileio import atomic_path
from edn_jax.runtime.progress import duration
from edn_jax.stages import stage_names
from edn_jax.training import train
from edn_jax.transfer import rendering, sources

PHASES = ("pose", "dataset", "training", "evaluation", "transfer", "page")
SIZE_MULTIPLE = 16     # frame sides are multiples of this (the generator's and the discriminators' downsamplings)
PROBE_STEPS = 100      # steps timed after compilation to set a stage's length from the budget...
PROBE_LOG_EVERY = 10   # ...logged (and synced) every this many; the rate is the median of the windows between
PROBE_WARM_UP = 50     # logs after this many steps: a new process runs its first ~50 steps up to 2x slower
MIN_TRAIN_FRAMES = 10  # frames with a person needed to train on
MIN_HELD_OUT = 2       # frames with a person needed to score the model on
# What a later phase costs, in units measured by the pose phase (the detector's seconds per frame):
# the held-out evaluation detects on 3 frames per held-out frame (generated, real, nearest), a
# transfer on 3 per source frame (the source, and the self score's two), plus compilation.
EVAL_DETECTIONS, TRANSFER_DETECTIONS, COMPILE_S = 3, 3, 30.0


@dataclasses.dataclass
class State:
    """What a dance workdir has decided and done (``dance/state.json``)."""

    target: str                 # the target video, absolute
    long_side: int
    height: int = 0
    width: int = 0
    stages: str = ""            # the training stages, face included or not
    face_reason: str = ""       # why the face stage runs or not
    steps: dict = dataclasses.field(default_factory=dict)   # per stage: its steps and how they were chosen
    phases: dict = dataclasses.field(default_factory=dict)  # finished phase -> wall seconds (summed over reruns)
    detect_seconds_per_frame: float = 0.0                     # measured by the pose phase

    @classmethod
    def load(cls, workdir: str, target: str, long_side: int) -> "State":
        path = storage.join(workdir, filenames.DANCE_STATE)
        if not storage.exists(path):
            return cls(storage.absolute(target), long_side)
        with storage.open(path) as f:
            state = cls(**json.load(f))
        if state.target != storage.absolute(target) or state.long_side != long_side:
            raise EdnError(f"{workdir} holds the dance of {state.target} at long side {state.long_side}",
                           "rerun with the same dance.target and dance.long_side to resume it, or use another --workdir")
        return state

    def save(self, workdir: str) -> None:
        with atomic_path(storage.join(workdir, filenames.DANCE_STATE)) as tmp, open(tmp, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)


def frame_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) with the longer side ``long_side`` and the shorter one in the same aspect,
    both multiples of ``SIZE_MULTIPLE``."""
    short = max(SIZE_MULTIPLE, SIZE_MULTIPLE * round(long_side * min(height, width) / max(height, width) / SIZE_MULTIPLE))
    return (long_side, short) if height >= width else (short, long_side)


def face_seen(keypoints: np.ndarray) -> float:
    """The fraction of frames with a person in which the face's landmarks were found (not only the head's points)."""
    person = keypoints[:, layout.BODY, 2].max(axis=1) > 0
    face = keypoints[:, layout.FACE, 2].max(axis=1) > 0
    return float(face[person].mean()) if person.any() else 0.0


def plan_steps(budget_s: float, probe_start: int, probe_end: int, probe_wall_s: float, rate: float,
               decay_fraction: float = 0.5) -> tuple[int, int]:
    """(num_steps, decay_steps) of a stage that fill ``budget_s`` seconds of training.

    A probe trained the stage from ``probe_start`` to ``probe_end`` in ``probe_wall_s`` seconds (the
    data, the restore, compilation and its steps) at ``rate`` steps/s after compilation. Resuming
    costs its setup again (the probe's time less its steps), then a step per 1/rate. The probe's
    steps ran at the constant rate of the schedule's first part, so the decay never reaches back into
    them. Raises EdnError when the budget holds no step after compilation.
    """
    setup = max(probe_wall_s - (probe_end - probe_start) / rate, 0.0)
    if budget_s < setup + 1.0 / rate:
        raise EdnError(f"a training budget of {budget_s / 60:.1f} min is too short: compiling and one step take "
                       f"{setup + 1.0 / rate:.0f} s here", f"give at least {math.ceil((2 * setup + 100 / rate) / 60)} "
                       "minutes (--config.dance.train_minutes) or 0 to train train.num_steps")
    steps = probe_end + max(int((budget_s - probe_wall_s - setup) * rate), 0)
    decay = min(int(round(decay_fraction * steps)), steps - probe_end)
    return steps, decay


def steady_rate(counts: np.ndarray, rates: np.ndarray, warm_up: int = PROBE_WARM_UP) -> float:
    """Steps/s of a stage's steady state from a probe's logged points: the median over the windows
    between successive points from ``warm_up`` steps on.

    ``rates[i]`` is the progress rate logged after ``counts[i]`` steps: steps since the first one,
    timed from the first step's dispatch to the sync of the logged one, so a window between two
    points, ``(c - 1) / r`` apart in time, holds only its own steps: not compilation, nor the batches
    prefetched while compiling. Measured at the defaults on 2 cores, the 10-step windows of a new
    process ran at 0.78, 0.45, 0.72, 0.98, 1.14 steps/s, then 1.1-1.3 for the rest of the stage; the
    median passes over a window slowed by something else on the machine.
    """
    counts, rates = np.asarray(counts, np.float64), np.asarray(rates, np.float64)
    keep = counts >= warm_up
    if keep.sum() < 2:
        raise EdnError(f"the probe logged {int(keep.sum())} step rates after its first {warm_up} steps, too few "
                       "to measure", "rerun the same command")
    elapsed = (counts[keep] - 1) / rates[keep]
    return float(np.median(np.diff(counts[keep]) / np.diff(elapsed)))


# --- the job -------------------------------------------------------------------------------------

def validate_dance_config(config) -> None:
    d = config.dance
    checks = [
        (bool(d.target), "dance.target is empty", "pass --config.dance.target=<the target person's video>"),
        (bool(d.source), "dance.source is empty", "pass --config.dance.source=<the dancer's video(s), a glob or @FILE>"),
        (d.long_side >= 4 * SIZE_MULTIPLE and d.long_side % SIZE_MULTIPLE == 0,
         f"dance.long_side={d.long_side} is not a multiple of {SIZE_MULTIPLE} from {4 * SIZE_MULTIPLE}",
         "use e.g. 192 (CPU) or 512 (accelerators)"),
        (d.train_minutes >= 0, f"dance.train_minutes={d.train_minutes} is negative", "use e.g. 20, or 0 for train.num_steps"),
        (0 < d.face_share < 1, f"dance.face_share={d.face_share} is outside (0, 1)", "use e.g. 0.25"),
        (0 <= d.face_min_fraction <= 1, f"dance.face_min_fraction={d.face_min_fraction} is outside [0, 1]",
         "use e.g. 0.5"),
        (not config.overwrite, "dance mode resumes what its workdir holds and never replaces it",
         "drop --config.overwrite, or start again in another --workdir"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)


class Job:
    """One dance workdir's run: its phases in order, the time each took, and the ETA of the rest."""

    def __init__(self, config, workdir: str, command: str):
        self.config, self.workdir, self.command = config, workdir, command
        d = config.dance
        self.target_info = video.probe_video(d.target)  # a missing or unreadable target fails here, first
        self.specs = sources.resolve_sources(_with(config, transfer={"source": d.source}))
        missing = [spec.path for spec in self.specs if not storage.exists(spec.path)]
        if missing:  # a typo is found now, not after training
            raise EdnError(f"source {missing[0]} not found", "check dance.source (videos, globs or @FILE)")
        self.source_frames = sum(_frames(spec.path) for spec in self.specs)  # for the ETA
        self.state = State.load(workdir, d.target, d.long_side)
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.t0 = time.perf_counter()

    # -- the configs each phase runs with --

    def phase_config(self, mode: str):
        s, d = self.state, self.config.dance
        fields = {"input": {"video": d.target},
                  "build": {"height": s.height, "width": s.width,
                            "keypoints": storage.join(self.workdir, filenames.POSE, filenames.KEYPOINTS)},
                  "train": {"height": s.height, "width": s.width, "stages": s.stages or self.config.train.stages,
                            "evaluate_holdout": False},  # the evaluation phase scores the held-out frames in full
                  "evaluate": {"model_workdir": self.workdir},
                  "transfer": {"model_workdir": self.workdir, "source": d.source, "side_by_side": True}}
        config = _with(self.config, **fields)
        config.mode = mode
        for name, planned in s.steps.items():
            section = _section(config, name)
            section.num_steps, section.decay_steps = planned["num_steps"], planned["decay_steps"]
            if name == "face":
                section.d_alone_steps = planned["d_alone_steps"]
        return config

    # -- the phases --

    def run(self) -> None:
        print(f"dance: {self.state.target} -> {len(self.specs)} source(s), workdir {storage.absolute(self.workdir)}")
        error = None
        for number, name in enumerate(PHASES, 1):
            if name in self.state.phases and name not in ("transfer", "page"):
                print(f"dance: phase {number} of {len(PHASES)}, {name}: done before "
                      f"({duration(self.state.phases[name])}); skipped")
                continue
            print(f"dance: phase {number} of {len(PHASES)}, {name} ...", flush=True)
            t, outcome = time.perf_counter(), "done"
            try:
                getattr(self, f"_{name}")()
            except EdnError as e:
                if name != "transfer":
                    raise
                error, outcome = e, "a source failed"  # the others are rendered; the page shows them all
            seconds = time.perf_counter() - t
            if error is None or name == "page":
                self.state.phases[name] = self.state.phases.get(name, 0.0) + seconds
            else:
                self.state.phases.pop(name, None)  # not done while a source fails
            self.state.save(self.workdir)
            print(f"dance: phase {number} of {len(PHASES)}, {name}: {outcome} in {duration(seconds)}; "
                  f"{self._eta(PHASES[number:])}", flush=True)
        if error is not None:
            raise error
        self._print_times()

    def _pose(self) -> None:
        keypoints = storage.join(self.workdir, filenames.POSE, filenames.KEYPOINTS)
        t = time.perf_counter()
        if storage.exists(keypoints):  # written last by pose mode's staged outputs: the poses are complete
            print(f"poses of the target already detected: {storage.absolute(keypoints)}")
        else:
            pipeline.run_pose_mode(_with(self.config, input={"video": self.config.dance.target}, mode="pose"),
                                   storage.join(self.workdir, filenames.POSE))
        seq = pipeline.load_keypoints(keypoints)
        if not self.state.detect_seconds_per_frame:
            self.state.detect_seconds_per_frame = (time.perf_counter() - t) / max(len(seq.keypoints), 1)
        self._check_target(seq)
        s = self.state
        s.height, s.width = frame_size(seq.height, seq.width, s.long_side)
        seen = face_seen(seq.keypoints)
        names = stage_names(self.config.train.stages)
        if "face" in names and seen < self.config.dance.face_min_fraction:
            names.remove("face")
            s.face_reason = (f"face stage skipped: the target's face was found in {100 * seen:.0f}% of the frames "
                             f"with a person, under dance.face_min_fraction={self.config.dance.face_min_fraction:g}")
        elif "face" in names:
            s.face_reason = f"face stage: the target's face was found in {100 * seen:.0f}% of the frames with a person"
        s.stages = ",".join(names)
        print(f"frame size {s.height}x{s.width} (the target is {seq.height}x{seq.width} as displayed); "
              f"training stages {s.stages}")
        if s.face_reason:
            print(s.face_reason)

    def _check_target(self, seq: pipeline.PoseSequence) -> None:
        target = self.config.dance.target  # (pose mode refuses a video with nobody in it)
        person = seq.keypoints[:, layout.BODY, 2].max(axis=1) > 0
        split = dataset.split_frames(np.flatnonzero(person), self.config.build.val_fraction)
        if len(split["train"]) < MIN_TRAIN_FRAMES or len(split["validation"]) < MIN_HELD_OUT:
            raise EdnError(f"the target {target} is too short to hold frames out: {int(person.sum())} frames with a "
                           f"person give {len(split['train'])} to train on and {len(split['validation'])} to score on "
                           f"(build.val_fraction={self.config.build.val_fraction:g})",
                           f"film at least {MIN_TRAIN_FRAMES + MIN_HELD_OUT} frames with the person in view "
                           "(a few minutes is what the method is made for)")

    def _dataset(self) -> None:
        split, directory = build.open_training_data(self.phase_config("build"), self.workdir)
        print(f"dataset: {storage.absolute(directory)}, {len(split.source)} training frames")

    def _training(self) -> None:
        """Each stage in turn: its steps planned from the budget (unless given in steps), then trained,
        so the next stage's probe starts from its finished predecessor."""
        names = stage_names(self.state.stages)
        face = self.config.dance.face_share if "face" in names else 0.0
        for i, name in enumerate(names):
            if self.config.dance.train_minutes and name not in self.state.steps:
                share = face if name == "face" else (1.0 - face) / sum(n != "face" for n in names)
                self._plan_stage(names[:i + 1], name, 60.0 * self.config.dance.train_minutes * share)
            config = self.phase_config("train")
            config.train.stages = ",".join(names[:i + 1])
            print(f"{name} stage: {_section(config, name).num_steps} steps")
            train.train_and_evaluate(config, self.workdir)

    def _plan_stage(self, names: list[str], name: str, budget_s: float) -> None:
        """Trains a few steps of ``name`` to measure its rate, then fixes its steps to fill ``budget_s``."""
        config = self.phase_config("train")
        config.train.stages = ",".join(names)
        start = _checkpoint_step(self.workdir, name)
        probe = start + PROBE_STEPS
        section = _section(config, name)
        section.num_steps, section.decay_steps = probe, 0
        if name == "face":
            section.d_alone_steps = probe
        config.train.log_every = PROBE_LOG_EVERY
        print(f"{name} stage: timing {PROBE_STEPS} steps to fit {budget_s / 60:.1f} minutes")
        t = time.perf_counter()
        train.train_and_evaluate(config, self.workdir)
        wall = time.perf_counter() - t
        scalars = report.read_scalars(storage.join(self.workdir, filenames.TENSORBOARD, name))
        at, rates = scalars.get("steps_per_sec", (np.zeros(0), np.zeros(0)))
        logged = (at > start) & (at <= probe)
        rate = steady_rate(at[logged] - start, rates[logged])
        given = _section(self.config, name)
        fraction = given.decay_steps / given.num_steps
        steps, decay = plan_steps(budget_s, start, probe, wall, rate, fraction)
        planned = {"num_steps": steps, "decay_steps": decay, "budget_minutes": round(budget_s / 60, 2),
                   "steps_per_sec": round(rate, 3), "probe_seconds": round(wall, 1)}
        if name == "face":
            f = self.config.train.face
            planned["d_alone_steps"] = max(probe, int(round(f.d_alone_steps / f.num_steps * steps)))
        self.state.steps[name] = planned
        self.state.save(self.workdir)
        print(f"{name} stage: {rate:.2f} steps/s after compilation ({wall:.0f} s for the first {probe - start}): "
              f"{steps} steps, the last {decay} decaying, to fit {budget_s / 60:.1f} minutes")

    def _evaluation(self) -> None:
        evaluate.run_evaluate_mode(self.phase_config("evaluate"), self.workdir)

    def _transfer(self) -> None:
        config = self.phase_config("transfer")
        out = storage.join(self.workdir, filenames.VIDEOS)
        done = all(storage.exists(p) for s in self.specs for p in sources.output_paths(config, out, s).values())
        if done and storage.exists(storage.join(out, filenames.TRANSFER_SUMMARY)):
            print(f"every source is rendered in {storage.absolute(out)}")
            return
        rendering.run_transfer_mode(config, out)

    def _page(self) -> None:
        config = self.phase_config("dance")
        report.record_run(self.workdir, report.RunRecord(
            "dance", self.command, self.started.strftime("%Y-%m-%d %H:%M:%S UTC"), time.perf_counter() - self.t0,
            config.to_json_best_effort(indent=2)))
        print(f"results page: {storage.absolute(report.write_page(self.workdir))}")

    # -- progress --

    def _eta(self, remaining: tuple[str, ...]) -> str:
        elapsed = time.perf_counter() - self.t0
        left = sum(self._estimate(name) for name in remaining if name not in self.state.phases or
                   name in ("transfer", "page"))
        if not remaining:
            return f"the job took {duration(elapsed)}"
        end = datetime.datetime.now() + datetime.timedelta(seconds=left)
        return f"job elapsed {duration(elapsed)}, about {duration(left)} left (ETA {end:%H:%M})"

    def _estimate(self, phase: str) -> float:
        """Seconds a phase is expected to take, from what the pose phase measured (0 before it)."""
        per_frame, s, frames = self.state.detect_seconds_per_frame, self.state, self.target_info.num_frames
        if phase == "training":
            if self.config.dance.train_minutes:
                return 60.0 * self.config.dance.train_minutes
            return sum(p.get("num_steps", 0) / max(p.get("steps_per_sec", 1.0), 1e-6) for p in s.steps.values())
        if phase == "dataset":
            return 0.25 * per_frame * frames
        if phase == "evaluation":
            return COMPILE_S + EVAL_DETECTIONS * per_frame * frames * self.config.build.val_fraction
        if phase == "transfer":
            return COMPILE_S * len(self.specs) + TRANSFER_DETECTIONS * per_frame * self.source_frames
        return 0.0

    def _print_times(self) -> None:
        print("dance: wall time per phase (summed over reruns):")
        for name in PHASES:
            print(f"  {name:10s} {duration(self.state.phases.get(name, 0.0))}")
        print(f"dance videos: {storage.absolute(storage.join(self.workdir, filenames.VIDEOS))}")


def run_dance_mode(config, workdir: str, overrides=(), command: str = "") -> None:
    """``mode=dance``: every phase in order, resumed where the workdir left off."""
    validate_dance_config(config)
    storage.makedirs(workdir)
    Job(config, workdir, command).run()


# --- helpers -------------------------------------------------------------------------------------

def _with(config, mode: str | None = None, **sections):
    """A copy of ``config`` with fields of its sections replaced (``{"train": {"height": 96}}``)."""
    out = copy.deepcopy(config)
    for section, fields in sections.items():
        for key, value in fields.items():
            out[section][key] = value
    if mode is not None:
        out.mode = mode
    return out


def _section(config, name: str):
    """The config section of a stage's length: ``train`` for the global stage, ``train.<name>`` otherwise."""
    return config.train if name == "global" else config.train[name]


def _checkpoint_step(workdir: str, stage: str) -> int:
    """The newest finished checkpoint step of a stage in the workdir, as Orbax sees it (0 without one)."""
    directory = checkpoints.checkpoint_dir(workdir, stage)
    if not storage.isdir(directory):
        return 0
    found = checkpoints.Checkpoints(directory, signature={}, read_only=True)
    try:
        return found.latest_step() or 0
    finally:
        found.close()


def _frames(path: str) -> int:
    try:
        return video.probe_video(path).num_frames if path and path.lower().endswith(dataset.VIDEO_EXTENSIONS) else 0
    except EdnError:
        return 0
