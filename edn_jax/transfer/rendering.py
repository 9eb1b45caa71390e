"""Motion transfer: a source dancer's motion rendered as the trained target, to H.264 videos.

``run_transfer_mode(config, workdir)`` renders every configured source (``edn_jax.transfer.sources``:
a video, a glob, a list file ``@list.txt``, pose-mode keypoint files, OpenPose JSON, or a
synthetic dancer) with the model trained in ``config.transfer.model_workdir`` and writes
one ``<source name>.mp4`` per source into ``workdir`` (plus ``<name>_side_by_side.mp4``:
source | normalized stick figure | output, with ``transfer.side_by_side``) and
``transfer_summary.json``. The model directory describes itself: its networks come from
the training record in its checkpoints, so any training config and overrides transfer
with plain ``configs/transfer.py``.

Per source, two passes keep memory flat in video length:

1. poses (``sources.prepare_source``): detected, tracked, cleaned, fit into the model's
   frame and normalized to the target's statistics from its training dataset;
2. render: stick figures and face boxes are drawn a chunk at a time and rendered by
   ``inference.BatchRenderer`` (one compiled, vmapped ``lax.scan`` over
   ``transfer.chunk_frames`` frames for ``B`` videos at once, each slot's carry reset when
   it takes the next video). Each chunk is encoded as its own H.264 segment; a finished
   video's segments are joined (stream copy) with the source's audio track.

Outputs are written atomically (a temporary name, renamed when complete), so an
interrupted render leaves no file that looks finished; what it keeps instead (the
segments, the slot's carry and the self score after each chunk, ``render_resume``) lets the
rerun of the same command continue each unfinished video from its last complete chunk, with
the bytes an uninterrupted render gives. A source whose outputs already
exist is skipped unless ``config.overwrite``; a failing source does not stop the others,
and all failures are listed at the end (then ``EdnError``, exit status 2).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
import traceback

import jax
import numpy as np

from edn_jax import filenames, stages, synthetic
from edn_jax.conditioning import exemplar
from edn_jax.errors import EdnError
from edn_jax.evaluation.held_out import pose_scores
from edn_jax.evaluation.self_score import SelfScore, people_counts, score_text
from edn_jax.models.factory import EXEMPLAR_CHANNELS
from edn_jax.models.inference import BatchRenderer
from edn_jax.pose import render
from edn_jax.runtime import progress, storage, video
from edn_jax.runtime.fileio import atomic_path
from edn_jax.transfer import render_resume
from edn_jax.transfer.sources import (NORMALIZATIONS, NO_PERSON_RULES, PreparedSource, SourceSpec, TRAVELS,
                                      frame_count_estimate, output_paths, prepare_source, resolve_sources)
from edn_jax.transfer.target import Target, load_target


@dataclasses.dataclass
class SourceResult:
    """What happened to one source (for the report and ``transfer_summary.json``)."""

    spec: SourceSpec
    status: str                       # rendered | skipped | failed
    outputs: dict[str, str]
    error: str = ""
    frames: int = 0
    fps: float = 0.0
    frames_without_person: int = 0
    interpolated: int = 0
    held: int = 0
    no_person: str = "hold"           # transfer.no_person: what the held frames show
    travel_kept: float = 1.0          # the fraction of the source's horizontal travel kept (transfer.travel)
    moved_in_frame: int = 0           # frames whose figure was shifted to stay inside the frame
    audio: bool = False
    normalized: bool = False
    seconds: float = 0.0
    self_score: dict = dataclasses.field(default_factory=dict)  # see SelfScore.summary

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["source"], d["name"] = self.spec.label, self.spec.name
        del d["spec"]
        return d


class _Job:
    """One source being rendered in a slot: its chunks' inputs, its output writers, and what it keeps
    after each chunk to resume from there (``render_resume``)."""

    def __init__(self, config, source: PreparedSource, outputs: dict[str, str], result: SourceResult,
                 chunk: int, height: int, width: int, scorer: SelfScore | None, resume: render_resume.ResumeState):
        self.source, self.result, self.chunk, self.scorer = source, result, chunk, scorer
        self.height, self.width = height, width
        self.failed = False
        self.started = time.monotonic()
        self.resume = resume
        saved = resume.load()
        self.position = saved.frames if saved else 0  # frames handed to the renderer
        self.saved_carry = saved.carry if saved else None  # the slot continues from it (None: a blank frame)
        if saved and scorer is not None and saved.score is not None:
            scorer.restore(saved.score)
        keep_audio = config.transfer.keep_audio and source.media is not None and video.has_audio(source.media)
        audio = source.media if keep_audio else None
        result.audio = bool(audio)
        self.writers: dict[str, video.SegmentedVideoWriter] = {}
        try:
            for name in ("video", "side_by_side"):
                if name in outputs:
                    self.writers[name] = video.SegmentedVideoWriter(
                        outputs[name], source.fps, resume.segments_dir(name), saved.segments.get(name, []) if saved
                        else [], audio_from=audio)
        except BaseException as e:
            self.abort(e)
            raise
        wants_frames = "side_by_side" in outputs or scorer is not None
        self.frames = source.frames() if wants_frames and source.frames is not None else None
        if self.frames is not None:
            for _ in range(self.position):  # the source frames of the chunks done before
                next(self.frames, None)
        if self.position:
            print(f"resuming {source.spec.name} at frame {self.position + 1} of {source.num_frames}")

    @property
    def dispatched_all(self) -> bool:
        return self.position >= self.source.num_frames

    def next_chunk(self, bank: exemplar.ExemplarBank | None = None):
        """(stick figures uint8 [chunk, H, W, 3], face boxes, valid, exemplars or None, frames used): the
        chunk after the last one, its tail padded with its last frame so every call has the same
        shape; with a ``bank``, each frame's exemplar (uint8 [chunk, H, W, 6])."""
        kps = self.source.keypoints[self.position:self.position + self.chunk]
        n = len(kps)
        if n < self.chunk:
            kps = np.concatenate([kps, kps[np.full(self.chunk - n, n - 1)]])
        labels = render.render_stick_figures(kps, self.height, self.width)
        boxes, valid = render.face_boxes(kps, self.height, self.width)
        self.position += n
        return labels, boxes, valid, None if bank is None else bank.lookup(kps), n

    def _source_frame(self, t: int) -> np.ndarray | None:
        """Source frame ``t`` in the model's frame, or None for a source without frames."""
        if self.frames is None:
            return None
        frame = next(self.frames, None)
        if frame is None:
            raise EdnError(f"{self.source.spec.label} ended before frame {t + 1} of its poses",
                           "the video changed since its poses were read; rerun")
        return render.transform_image(frame, self.source.transform)

    def write(self, outputs: np.ndarray, labels: np.ndarray, n: int, carry=None) -> None:
        """The first ``n`` rendered frames of a chunk (uint8), and their stick figures for side by side;
        then, unless the video is done, the progress to resume from (``carry``: a callable giving the
        renderer's carry after this chunk)."""
        first = self.writers["video"].frames_written
        sources = [self._source_frame(first + i) for i in range(n)] if self.frames is not None else None
        self.writers["video"].write_chunk(outputs[:n])
        if "side_by_side" in self.writers:
            panels = [sources[i] if sources is not None else render.render_stick_figure(
                self.source.source_keypoints[first + i], self.height, self.width) for i in range(n)]
            self.writers["side_by_side"].write_chunk(np.stack([np.concatenate([panel, labels[i], outputs[i]], axis=1)
                                                               for i, panel in enumerate(panels)]))
        if self.scorer is not None:
            self.scorer.add(outputs[:n], None if sources is None else np.stack(sources), labels[:n])
        if not self.done:
            self.resume.save(self.writers["video"].frames_written,
                             {name: w.segments for name, w in self.writers.items()},
                             carry() if carry is not None else None,
                             self.scorer.state() if self.scorer is not None else None)

    @property
    def done(self) -> bool:
        return self.writers["video"].frames_written >= self.source.num_frames

    def finish(self) -> None:
        for writer in self.writers.values():  # every output encoded before any appears
            writer.complete()
        for writer in self.writers.values():
            writer.commit()
        self.resume.discard()
        self.result.status = "rendered"
        self.result.seconds = time.monotonic() - self.started
        if self.scorer is not None:
            self.result.self_score = self.scorer.summary(self.source.keypoints)
            self.scorer.close()

    def abort(self, error: BaseException) -> None:
        """Stops this video; its completed chunks stay for a rerun to resume from."""
        self.failed = True
        for writer in self.writers.values():
            writer.abort(error)
        if self.scorer is not None:
            self.scorer.close()


def _error_text(error: BaseException) -> str:
    if isinstance(error, EdnError):
        return str(error)
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    return " ".join(f"{type(error).__name__}: {error}".split())


class _Slots:
    """The batch renderer's slots over a queue of sources: each free slot takes the next source,
    its chunks are drawn while the devices render the previous call, and each finished video is
    kept for the batch's self score. A source that fails is recorded and its slot freed."""

    def __init__(self, config, target: Target, specs: list[SourceSpec], outputs: dict[str, dict[str, str]],
                 results: dict[str, SourceResult], renderer: BatchRenderer):
        self.config, self.target, self.renderer = config, target, renderer
        self.outputs, self.results = outputs, results
        self.pending = collections.deque(specs)
        self.jobs: list[_Job | None] = [None] * renderer.slots
        self.live: set[_Job] = set()
        self.scored: list[tuple[np.ndarray, np.ndarray, tuple]] = []  # (detected, drawn, people) of each video
        self.estimates = {s.name: frame_count_estimate(config, s) for s in specs}
        self.bar = progress.Progress(sum(self.estimates.values()),
                                     f"rendering {len(specs)} video(s) with the {target.model.stage.name} model")

    def fail(self, job_or_spec, error: BaseException) -> None:
        job = job_or_spec if isinstance(job_or_spec, _Job) else None
        result = job.result if job else self.results[job_or_spec.name]
        if job is not None:
            self.live.discard(job)
            job.abort(error)
        result.status, result.error = "failed", _error_text(error)
        print(f"failed: {result.spec.label}: {result.error}", file=sys.stderr)

    def _start(self, spec: SourceSpec) -> _Job:
        """The job of one source: its poses prepared for the target, its outputs opened (resumed
        where an interrupted run left them), and what it reports filled into its result."""
        config, t, target, r = self.config, self.config.transfer, self.target, self.renderer
        result = self.results[spec.name]
        source = prepare_source(config, spec, target.height, target.width, target.stats, target.poses)
        result.frames, result.fps, result.normalized = source.num_frames, source.fps, source.normalized
        result.frames_without_person = int(source.no_person.sum())
        result.interpolated, result.held = int(source.interpolated.sum()), int(source.held.sum())
        result.travel_kept, result.no_person = source.travel_kept, t.no_person
        result.moved_in_frame = int(source.moved_in_frame.sum())
        scorer = SelfScore.from_config(config, r.height) if t.self_score else None
        key = render_resume.fingerprint(config, spec.label, spec.path, target.model.stage.name,
                                        target.model.stage.num_steps, r.slots, r.chunk)
        workdir = os.path.dirname(storage.absolute(self.outputs[spec.name]["video"]))
        resume = render_resume.ResumeState(render_resume.partial_dir(workdir, spec.name), key)
        return _Job(config, source, self.outputs[spec.name], result, r.chunk, r.height, r.width, scorer, resume)

    def _fill(self, reset: np.ndarray) -> None:
        """Each slot that is free (or whose video is all dispatched) takes the next source that starts."""
        for i in range(self.renderer.slots):
            while (self.jobs[i] is None or self.jobs[i].failed or self.jobs[i].dispatched_all) and self.pending:
                spec = self.pending.popleft()
                try:
                    job = self._start(spec)
                except Exception as e:  # noqa: BLE001 - one bad source must not stop the batch
                    self.bar.total = (self.bar.total or 0) - self.estimates[spec.name]
                    self.fail(spec, e)
                    continue
                self.bar.total = (self.bar.total or 0) + job.source.num_frames - self.estimates[spec.name]
                self.bar.update(job.position)  # frames a resumed video had done before
                self.jobs[i] = job
                self.live.add(job)
                if job.saved_carry is None:
                    reset[i] = True
                else:  # a resumed video: the slot continues from its last chunk's carry
                    self.renderer.set_slot_carry(i, job.saved_carry)
                    reset[i] = False
            if self.jobs[i] is not None and (self.jobs[i].failed or self.jobs[i].dispatched_all):
                self.jobs[i] = None

    def inputs(self):
        """The next call's inputs and, per slot, (slot, job, frames, stick figures) to write afterwards."""
        B, T, H, W = self.renderer.slots, self.renderer.chunk, self.renderer.height, self.renderer.width
        reset = np.zeros(B, bool)
        self._fill(reset)
        labels = np.zeros((B, T, H, W, 3), np.uint8)
        boxes, valid = np.zeros((B, T, 4), np.float32), np.zeros((B, T), bool)
        exemplars = np.zeros((B, T, H, W, EXEMPLAR_CHANNELS), np.uint8) if self.target.exemplars is not None else None
        work = []
        for i, job in enumerate(self.jobs):
            if job is None:
                continue
            try:
                labels[i], boxes[i], valid[i], found, n = job.next_chunk(self.target.exemplars)
                if exemplars is not None:
                    exemplars[i] = found
            except Exception as e:  # noqa: BLE001
                self.fail(job, e)
                self.jobs[i] = None
                continue
            work.append((i, job, n, labels[i]))
        return (labels, boxes, valid, reset, exemplars), work

    def write(self, rendered: np.ndarray, work) -> None:
        """One call's frames to their videos; a video that is done is finished and kept for the score."""
        for i, job, n, labels in work:
            if job.failed:
                continue
            try:
                job.write(rendered[i], labels, n, carry=lambda i=i: self.renderer.slot_carry(i))
                self.bar.update(n)
                if job.done:
                    self.live.discard(job)
                    job.finish()
                    if job.scorer is not None:
                        self.scored.append((np.stack(job.scorer.detected), job.source.keypoints,
                                            job.scorer.people_arrays()))
            except Exception as e:  # noqa: BLE001
                self.fail(job, e)

    def run(self) -> None:
        """Every source rendered; anything but a source's own failure aborts the unfinished outputs."""
        try:
            batch, work = self.inputs()
            while work:
                outputs_dev = self.renderer.dispatch(*batch)
                batch, next_work = self.inputs()  # drawn while the devices render
                self.write(np.asarray(outputs_dev), work)
                work = next_work
        except BaseException as e:
            for job in list(self.live):
                job.abort(e)
            raise
        finally:
            self.bar.close()

    def batch_score(self) -> dict:
        """The pooled self score of every video scored ({} when none was)."""
        if not self.scored:
            return {}
        people = [np.concatenate(part) for part in zip(*(p for _, _, p in self.scored))]
        detected = np.concatenate([d for d, _, _ in self.scored])
        drawn = np.concatenate([k for _, k, _ in self.scored])
        return dict(pose_scores(detected, drawn, self.renderer.height), people=people_counts(*people),
                    videos=len(self.scored))


def render_sources(config, target: Target, specs: list[SourceSpec], outputs: dict[str, dict[str, str]],
                   results: dict[str, SourceResult], renderer: BatchRenderer | None = None) -> dict:
    """Pass 1 and 2 for ``specs``: each slot of the batch renderer takes the next source when free.
    Returns the self score of the whole batch (with ``transfer.self_score``; else {}): every
    rendered video's detections against the poses drawn, pooled.

    Per-source failures are recorded in ``results`` and the others go on; anything else
    (e.g. Ctrl-C) aborts every unfinished output and propagates.
    """
    t = config.transfer
    if not specs:
        return {}
    if renderer is None:
        count = min(t.batch_videos or jax.local_device_count(), len(specs))
        renderer = BatchRenderer(target.model, count, t.chunk_frames)
    slots = _Slots(config, target, specs, outputs, results, renderer)
    slots.run()
    return slots.batch_score()


# ----------------------------------------------------------------------------- the mode


def validate_transfer_config(config) -> None:
    if "transfer" not in config:
        raise EdnError("the config has no transfer section", "use configs/transfer.py, or add config.transfer fields")
    t = config.transfer
    checks = [
        (t.chunk_frames >= 1, f"transfer.chunk_frames={t.chunk_frames} must be >= 1", "use e.g. 32"),
        (t.batch_videos >= 0, f"transfer.batch_videos={t.batch_videos} must be >= 0",
         "use 0 for one video per device"),
        (t.synthetic_frames >= 1, f"transfer.synthetic_frames={t.synthetic_frames} must be >= 1", "use e.g. 120"),
        (t.synthetic_seed >= 0, f"transfer.synthetic_seed={t.synthetic_seed} must be >= 0", "use e.g. 1"),
        (0 <= t.synthetic_appearance < len(synthetic.APPEARANCES),
         f"transfer.synthetic_appearance={t.synthetic_appearance} is not one of 0..{len(synthetic.APPEARANCES) - 1}",
         "pick an appearance in that range"),
        (config.input.max_frames >= 0, f"input.max_frames={config.input.max_frames} is negative",
         "use 0 for all frames"),
        (t.detect_min_side >= 0, f"transfer.detect_min_side={t.detect_min_side} must be >= 0", "use e.g. 256"),
        (t.normalization in NORMALIZATIONS, f"transfer.normalization={t.normalization!r} is not known",
         f"use one of {', '.join(NORMALIZATIONS)}"),
        (t.travel in TRAVELS, f"transfer.travel={t.travel!r} is not known", f"use one of {', '.join(TRAVELS)}"),
        (t.no_person in NO_PERSON_RULES, f"transfer.no_person={t.no_person!r} is not known",
         f"use one of {', '.join(NO_PERSON_RULES)}"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)


def _describe(r: SourceResult) -> str:
    if r.status == "skipped":
        return f"skipped  {r.spec.name}: {r.error}"
    if r.status == "failed":
        return f"failed   {r.spec.name}: {r.error}"
    rule = "held" if r.no_person == "hold" else "shown as the plate"
    gaps = (f", {r.frames_without_person} frames without a person ({r.interpolated} interpolated, {r.held} {rule})"
            if r.frames_without_person else "")
    if r.travel_kept < 1.0:
        gaps += f"; horizontal travel fit into the target's: {100 * r.travel_kept:.0f}% of it kept"
    if r.moved_in_frame:
        gaps += f"; {r.moved_in_frame} frames moved inside the frame"
    extras = ("; audio copied" if r.audio else "") + ("" if r.normalized else "; poses not normalized")
    files = ", ".join(storage.absolute(p) for p in r.outputs.values())
    scored = f"; self score: {score_text(r.self_score)}" if r.self_score else ""
    return f"rendered {r.spec.name}: {r.frames} frames at {r.fps:.2f} fps{gaps}{extras}{scored} -> {files}"


def run_transfer_mode(config, workdir: str, overrides=()) -> list[SourceResult]:
    """Transfer mode: renders every source as the target into ``workdir``; returns the per-source results.
    ``overrides`` (the command line's ``--config.*`` names) are checked against the model's record.

    Raises EdnError when every source's outputs already exist (without ``config.overwrite``) or
    when any source failed (after rendering the others).
    """
    validate_transfer_config(config)
    specs = resolve_sources(config)
    if jax.process_count() > 1:  # each process renders its share on its own devices
        specs = specs[jax.process_index()::jax.process_count()]
    results: dict[str, SourceResult] = {}
    outputs = {s.name: output_paths(config, workdir, s) for s in specs}
    to_render = []
    sources_abs = {storage.absolute(s.path) for s in specs if s.path}
    for spec in specs:
        paths = outputs[spec.name]
        result = results[spec.name] = SourceResult(spec, "pending", paths)
        clash = [p for p in paths.values() if storage.absolute(p) in sources_abs]
        existing = [p for p in paths.values() if storage.exists(p)]
        if clash:
            result.status = "failed"
            result.error = str(EdnError(f"{spec.label}: the output {clash[0]} is a source",
                                        "transfer into another --workdir"))
        elif existing and not config.overwrite:
            result.status = "skipped"
            result.error = f"{storage.absolute(existing[0])} exists (pass --config.overwrite=True to replace it)"
        else:
            to_render.append(spec)
    if not to_render and not any(r.status == "failed" for r in results.values()):
        first = next(iter(results.values()))
        raise EdnError(f"{workdir} already holds the transfer output{'s' if len(results) > 1 else ''} "
                       f"({os.path.basename(first.outputs['video'])}{', ...' if len(results) > 1 else ''})",
                       "choose another --workdir or pass --config.overwrite=True to replace them")
    storage.makedirs(workdir)
    if to_render:
        target = load_target(config, stages.explicit_fields(config, overrides))
        print(f"target: {target.model.stage.title} model from {storage.absolute(config.transfer.model_workdir)}, "
              f"pose statistics from {target.dataset_dir}")
        batch_score = render_sources(config, target, to_render, outputs, results)
    else:
        batch_score = {}

    ordered = [results[s.name] for s in specs]
    summary_name = filenames.transfer_summary(jax.process_index(), jax.process_count())
    with atomic_path(os.path.join(workdir, summary_name)) as tmp, open(tmp, "w") as f:
        json.dump({"model_workdir": storage.absolute(config.transfer.model_workdir),
                   "sources": [r.to_json() for r in ordered], "self_score": batch_score}, f, indent=2)
    counts = collections.Counter(r.status for r in ordered)
    print(f"transfer: {counts['rendered']} rendered, {counts['skipped']} skipped (outputs exist), "
          f"{counts['failed']} failed; summary {storage.absolute(storage.join(workdir, summary_name))}")
    for r in ordered:
        print("  " + _describe(r))
    if batch_score:
        print(f"  self score of the batch ({batch_score['videos']} video(s)): {score_text(batch_score)}")
    failed = [r for r in ordered if r.status == "failed"]
    if len(ordered) == 1 and failed:
        raise EdnError(failed[0].error)
    if failed:
        listed = ", ".join(f"{r.spec.label} ({r.error})" for r in failed)
        raise EdnError(f"{len(failed)} of {len(ordered)} sources failed: {listed}",
                       "fix or remove them and rerun the same command: finished videos are skipped")
    return ordered
