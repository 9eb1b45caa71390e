"""The results page of a workdir: ``<workdir>/report/index.html``, what a person opens to look at a run.

It is static and opens from the file system: no server, no scripts, nothing fetched from
elsewhere; images and videos are linked by relative paths, so the workdir can be copied or
downloaded whole. Train, evaluate, transfer and ablation modes rewrite it at their end from what
the workdir holds, so it always shows every result there, whichever mode made it:

- the dance videos and their side-by-sides (``transfer_summary.json``, in the workdir or in dance
  mode's ``videos/``), playable in the page, with each transfer's self score;
- dance mode's phases with the time each took, the frame size, stages and steps it chose
  (``dance/state.json``);
- the held-out table (the model against the mean and the nearest training frame), its per-frame
  plot, the sample grid and the side-by-side (``evaluation/<stage>/``);
- the training curves, each loss term and the held-out scores over steps, drawn from the
  TensorBoard events into ``report/curves_<run>.png``; the last sample grids and background plates;
- the ablation table (``ablation.md``);
- every run of a mode in the workdir: its command, when it started, how long it took, and its config
  (``report/runs.json``, appended by ``record_run``).
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import os
import posixpath
import urllib.parse

import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edn_jax import filenames
from edn_jax.runtime import storage
from edn_jax.runtime.fileio import atomic_path
from edn_jax.runtime.progress import duration

HELD_OUT_SCORES = (("ssim", "SSIM", True), ("body_ssim", "body SSIM", True), ("body_lpips", "body LPIPS", False),
                   ("face_ssim", "face SSIM", True), ("face_lpips", "face LPIPS", False))
HELD_OUT_ROWS = (("generated", "generated"), ("mean_train_frame", "mean training frame"),
                 ("nearest_train_frame", "nearest training frame by pose"))
CURVES_PER_ROW = 3
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img,video{max-width:100%;margin:.3em 0}
video{height:320px;background:#000}
.pair{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.pair>div{flex:0 1 auto}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}.note{color:#666;font-size:.9em}"""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run of a mode in the workdir, as the page lists it."""

    mode: str
    command: str          # the command line as typed
    started: str          # ISO time, UTC
    seconds: float
    config: str           # the config the run used, as JSON


def record_run(workdir: str, record: RunRecord) -> None:
    """Appends ``record`` to ``<workdir>/report/runs.json`` (rewritten whole, atomically)."""
    path = storage.join(workdir, filenames.REPORT, filenames.RUNS)
    runs = _read_json(path) or []
    runs.append(dataclasses.asdict(record))
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(runs, f, indent=2)


def write_page(workdir: str) -> str:
    """Writes ``<workdir>/report/index.html`` (and its curve plots) from what the workdir holds; returns its path."""
    out_dir = storage.join(workdir, filenames.REPORT)
    sections = [_transfer_section(workdir, out_dir), _dance_section(workdir), _held_out_section(workdir, out_dir),
                _training_section(workdir, out_dir), _ablation_section(workdir),
                _runs_section(storage.join(out_dir, filenames.RUNS))]
    body = "\n".join(s for s in sections if s) or "<p>Nothing in this workdir to show yet.</p>"
    title = f"edn_jax: {posixpath.basename(storage.absolute(workdir).rstrip('/'))}"
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n"
            f"<p class=\"note\">{_e(storage.absolute(workdir))}, page written {written}</p>\n{body}\n</body></html>\n")
    path = storage.join(out_dir, filenames.PAGE)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(page)
    return path


# --- sections ------------------------------------------------------------------------------------

def _transfer_section(workdir: str, out_dir: str) -> str:
    summary = next(filter(None, (_read_json(storage.join(workdir, *sub, filenames.TRANSFER_SUMMARY))
                                 for sub in ((), (filenames.VIDEOS,)))),
                   None)
    if not summary:
        return ""
    parts = ["<h2>Dance videos</h2>",
             f"<p class=\"note\">Model: {_e(summary.get('model_workdir', ''))}</p>"]
    rows = []
    for source in summary.get("sources", []):
        name = source.get("name", "")
        outputs = source.get("outputs") or {}
        if source.get("status") == "failed":
            parts.append(f"<h3>{_e(name)}</h3><p>failed: {_e(source.get('error', ''))}</p>")
            continue
        videos = [(label, outputs[key]) for key, label in (("video", "the dance"), ("side_by_side",
                  "source | stick figure | output")) if outputs.get(key)]
        parts.append(f"<h3>{_e(name)}</h3><p class=\"note\">from {_e(source.get('source', ''))}: "
                     f"{source.get('frames', 0)} frames at {source.get('fps', 0):.2f} fps</p><div class=\"pair\">"
                     + "".join(f"<div>{_e(label)}<br>{_video(path, out_dir)}</div>" for label, path in videos)
                     + "</div>")
        rows.append((name, source.get("self_score") or {}))
    if rows:
        parts.append("<h3>Self scores</h3><p class=\"note\">The pose detector on each output frame against the pose "
                     "it was asked to draw; the people check with the asked region masked.</p>" + _self_score_table(rows))
    return "\n".join(parts)


def _self_score_table(rows: list[tuple[str, dict]]) -> str:
    head = ("video", "body pose distance (px)", "body missed", "asked body found", "a second person",
            "frame jitter (output / source)")
    lines = []
    for name, score in rows:
        pose, people, jitter = score.get("pose") or {}, score.get("people") or {}, score.get("frame_jitter") or {}
        lines.append((name, _num(pose.get("body_distance"), 2), _pct(pose.get("body_missed_rate")),
                      _pct(people.get("asked_body_found_rate")), _pct(people.get("second_person_rate")),
                      f"{_num(jitter.get('output'), 2)} / {_num(jitter.get('source'), 2)}"))
    return _table(head, lines)


def _held_out_section(workdir: str, out_dir: str) -> str:
    parts = []
    for metrics_path in sorted(storage.glob(storage.join(workdir, filenames.EVALUATION, "*", filenames.METRICS))):
        metrics = _read_json(metrics_path) or {}
        stage_dir = os.path.dirname(metrics_path)
        stage = os.path.basename(stage_dir)
        scores = [score for score in HELD_OUT_SCORES if _has(metrics, "generated", score[0])]
        head = ("", *(f"{label} ({'higher' if higher else 'lower'} is better)" for _, label, higher in scores))
        lines = [(label, *(_num((metrics.get(row) or {}).get(key), 3) for key, _, _ in scores))
                 for row, label in HELD_OUT_ROWS if metrics.get(row)]
        pose = (metrics.get("generated") or {}).get("pose") or {}
        parts.append(f"<h3>{_e(stage)} stage, step {metrics.get('step', '?')}: {metrics.get('frames', 0)} held-out "
                     f"frames at {'x'.join(str(v) for v in metrics.get('frame_size_hw', []))}</h3>"
                     + _table(head, lines)
                     + f"<p>body pose distance of the generated frames: {_num(pose.get('body_distance'), 2)} px "
                       f"({_pct(pose.get('body_missed_rate'))} missed)</p>"
                     + _image_if(storage.join(stage_dir, filenames.PER_FRAME_PLOT), out_dir, "per-frame scores")
                     + _image_if(storage.join(stage_dir, filenames.EVALUATION_SAMPLES), out_dir, "samples")
                     + (_video(storage.join(stage_dir, "side_by_side.mp4"), out_dir)
                        if storage.exists(storage.join(stage_dir, "side_by_side.mp4")) else ""))
    return "<h2>Held-out frames</h2>\n" + "\n".join(parts) if parts else ""


def _training_section(workdir: str, out_dir: str) -> str:
    parts = []
    summary = _read_json(storage.join(workdir, filenames.TRAIN_SUMMARY))
    for events_dir in sorted(storage.glob(storage.join(workdir, filenames.TENSORBOARD, "*"))):
        run = os.path.basename(events_dir)
        plot = storage.join(out_dir, f"curves_{run}.png")
        if _plot_is_current(events_dir, plot) or _plot_curves(events_dir, plot, run):
            parts.append(f"<h3>{_e(run)}</h3>" + _image(plot, out_dir, f"{run} curves"))
    for stage in (summary or {}).get("stages", []):
        name = stage.get("stage", "")
        grids = sorted(storage.glob(storage.join(workdir, filenames.SAMPLES, name, filenames.SAMPLE_GRIDS)))
        extras = [storage.join(workdir, f) for f in (filenames.holdout_samples(name), filenames.background(name),
                                                     filenames.background(name, filled=True))]
        shown = ([grids[-1]] if grids else []) + [p for p in extras if storage.exists(p)]
        parts.append(f"<h3>{_e(name)} stage: {stage.get('step', '?')} steps at {stage.get('height')}x{stage.get('width')}"
                     "</h3><div class=\"pair\">"
                     + "".join(f"<div>{_e(os.path.basename(p))}<br>{_image(p, out_dir, os.path.basename(p))}</div>"
                               for p in shown) + "</div>")
    return "<h2>Training</h2>\n" + "\n".join(parts) if parts else ""


def _ablation_section(workdir: str) -> str:
    path = storage.join(workdir, "ablation.md")
    if not storage.exists(path):
        return ""
    with storage.open(path) as f:
        return f"<h2>Ablation</h2>\n<pre>{_e(f.read())}</pre>"


def _dance_section(workdir: str) -> str:
    state = _read_json(storage.join(workdir, filenames.DANCE_STATE))
    if not state:
        return ""
    lines = [(name, duration(seconds)) for name, seconds in state.get("phases", {}).items()]
    steps = "".join(f"<li>{_e(name)} stage: {p['num_steps']} steps ({p['steps_per_sec']:.2f} steps/s measured, to fit "
                    f"{p['budget_minutes']:g} minutes)</li>" for name, p in state.get("steps", {}).items())
    notes = [f"target {state.get('target', '')}, frames at {state.get('height')}x{state.get('width')}, stages "
             f"{state.get('stages', '')}", state.get("face_reason", "")]
    return ("<h2>Dance phases</h2>\n" + "".join(f"<p class=\"note\">{_e(n)}</p>" for n in notes if n)
            + (f"<ul>{steps}</ul>" if steps else "") + _table(("phase", "wall time (summed over reruns)"), lines))


def _runs_section(path: str) -> str:
    runs = _read_json(path) or []
    if not runs:
        return ""
    lines = [(r["mode"], r["started"], duration(r["seconds"])) for r in runs]
    configs = "".join(f"<details><summary>{_e(r['mode'])} at {_e(r['started'])}: command and config</summary>"
                      f"<pre>{_e(r['command'])}</pre><pre>{_e(r['config'])}</pre></details>" for r in runs)
    return "<h2>Runs</h2>\n" + _table(("mode", "started", "took"), lines) + configs


# --- training curves -----------------------------------------------------------------------------

def _events_signature(events_dir: str) -> list:
    """The event files of a run with their sizes and times: unchanged, the plot need not be redrawn."""
    return [[os.path.basename(p), *storage.size_and_mtime(p)]
            for p in storage.glob(storage.join(events_dir, "events.out.tfevents.*"))]


def _plot_is_current(events_dir: str, plot: str) -> bool:
    return storage.exists(plot) and _read_json(plot + ".json") == _events_signature(events_dir)


def _plot_curves(events_dir: str, plot: str, run: str) -> bool:
    """Draws ``plot`` from the run's events and records what it was drawn from; False without scalars.
    (Reading a long run's events, images included, takes seconds: a page rewritten by a later
    evaluate or transfer run in the same workdir reuses the plot.)"""
    signature = _events_signature(events_dir)
    scalars = read_scalars(events_dir)
    if not scalars:
        return False
    curves(scalars, plot, run)
    with atomic_path(plot + ".json") as tmp, open(tmp, "w") as f:
        json.dump(signature, f)
    return True


def read_scalars(events_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The scalars of a TensorBoard run directory (clu's writer): {tag: (steps, values)}, by step."""
    series: dict[str, dict[int, float]] = {}
    for path in sorted(storage.glob(storage.join(events_dir, "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("tensor") and value.tensor.tensor_shape.dim:
                        continue  # images and histograms
                    number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                              else float(value.simple_value))
                    series.setdefault(value.tag, {})[int(event.step)] = number
        except tf.errors.DataLossError:
            pass  # a file still being written ends mid-record: what was read so far stands
    return {tag: (np.array(sorted(s)), np.array([s[k] for k in sorted(s)])) for tag, s in series.items()}


SERIES_SUFFIXES = (("_generated", "generated"), ("_mean_train_frame", "mean training frame"),
                   ("_nearest_train_frame", "nearest training frame"))


def panels(scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Scalars grouped into panels: a held-out score of the model and of its baselines share one
    (``holdout/body_lpips_generated`` and ``..._nearest_train_frame``: panel ``holdout/body_lpips``);
    a tag of its own that never changes (the stage's index, the number of held-out frames) is left out."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for tag in sorted(scalars):
        steps, values = scalars[tag]
        panel, label = tag, tag.rsplit("/", 1)[-1]
        for suffix, name in SERIES_SUFFIXES:
            if tag.endswith(suffix):
                panel, label = tag[:-len(suffix)], name
        if panel == tag and np.all(values == values[0]):
            continue
        out.setdefault(panel, {})[label] = (steps, values)
    return out


def curves(scalars: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str) -> None:
    """A PNG of the scalars over steps, one small panel per ``panels`` group (in name order)."""
    groups = panels(scalars)
    rows = max(1, -(-len(groups) // CURVES_PER_ROW))
    fig = Figure(figsize=(3.6 * CURVES_PER_ROW, 2.2 * rows + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, CURVES_PER_ROW, squeeze=False).ravel()
    for ax, (name, series) in zip(axes, groups.items()):
        for label, (steps, values) in series.items():
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, lw=1, label=label)
        if len(series) > 1:
            ax.legend(fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# --- HTML helpers --------------------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text))


def _link(path: str, out_dir: str) -> str:
    """``path`` relative to the page's folder, as a URL (the workdir opens wherever it is copied)."""
    return urllib.parse.quote(posixpath.relpath(storage.absolute(path), storage.absolute(out_dir)))


def _image(path: str, out_dir: str, alt: str) -> str:
    return f"<img src=\"{_link(path, out_dir)}\" alt=\"{_e(alt)}\">"


def _image_if(path: str, out_dir: str, alt: str) -> str:
    return _image(path, out_dir, alt) if storage.exists(path) else ""


def _video(path: str, out_dir: str) -> str:
    return f"<video controls preload=\"metadata\" src=\"{_link(path, out_dir)}\"></video>"


def _table(head, lines) -> str:
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in line) + "</tr>" for line in lines) + "</table>")


def _num(value, digits: int) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _has(metrics: dict, row: str, key: str) -> bool:
    return (metrics.get(row) or {}).get(key) is not None


def _read_json(path: str):
    try:
        with storage.open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
