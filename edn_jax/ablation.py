"""The paper's ablation table: pix2pixHD vs +T.S. vs +T.S.+Face, same data and training budget.

``run_ablation(config, workdir)`` builds one dataset, trains two models on it from ``config``'s
sizes and schedule, evaluates three of their stages on the held-out frames with
``edn_jax.evaluation.evaluate`` and writes the table (markdown and JSON) into the workdir:

* **pix2pixHD**: ``model.temporal=False`` (G sees the stick figure alone, D single frames),
  the global stage only, ``train.num_steps`` steps;
* **+T.S.**: the paper's temporal smoothing, the global stage, the same ``train.num_steps``;
* **+T.S.+Face**: the same model after its face stage (``train.face.num_steps`` more steps on the
  face GAN with the generator frozen, as in the paper).

Both training runs and every evaluation resume: a rerun skips what is done.
"""

from __future__ import annotations

import copy
import json
import os

from clu import metric_writers

from edn_jax import filenames, stages
from edn_jax.data import build
from edn_jax.errors import EdnError
from edn_jax.evaluation import evaluate, held_out, metrics
from edn_jax.evaluation.evaluate import fmt
from edn_jax.models import checks
from edn_jax.runtime import storage
from edn_jax.runtime.fileio import atomic_path
from edn_jax.training import train

# (row name, training run directory, model.temporal, stages trained, stage evaluated)
VARIANTS = (
    ("pix2pixHD", "pix2pixhd", False, "global", "global"),
    ("+T.S.", "temporal", True, "global,face", "global"),
    ("+T.S.+Face", "temporal", True, "global,face", "face"),
)


def variant_config(config, temporal: bool, names: str, dataset_dir: str):
    """``config`` as one training run of the ablation: its temporal flag and stages, the shared dataset."""
    variant = copy.deepcopy(config)
    with variant.unlocked():
        variant.mode = "train"
        variant.model.temporal = temporal
        variant.train.stages = names
        variant.data.dataset_dir = dataset_dir
    return variant


def train_variants(config, workdir: str, mesh=None) -> str:
    """Builds the shared dataset (first run) and trains both models; returns the dataset directory."""
    if "face" not in stages.stage_names(config.train.stages):
        raise EdnError(f"train.stages={config.train.stages!r} has no face stage, so there is no +T.S.+Face row",
                       "use train.stages=global,face")
    for _, _, temporal, names, _ in VARIANTS:  # every run's values checked before the dataset is built
        checks.validate_train_config(variant_config(config, temporal, names, config.data.dataset_dir))
    _, dataset_dir = build.open_training_data(config, workdir)
    for run in dict.fromkeys((run, temporal, names) for _, run, temporal, names, _ in VARIANTS):
        name, temporal, names = run
        print(f"ablation: training {name} (model.temporal={temporal}, stages {names}) in "
              f"{os.path.join(workdir, name)}")
        train.train_and_evaluate(variant_config(config, temporal, names, dataset_dir), os.path.join(workdir, name),
                                 mesh)
    return dataset_dir


def _slug(row: str) -> str:
    return {"pix2pixHD": "pix2pixhd", "+T.S.": "temporal", "+T.S.+Face": "temporal_face"}[row]


def format_table(results: list[tuple[str, dict]], config, command: str) -> str:
    """The paper-style markdown tables (image quality, then pose distance) of evaluated rows, each next
    to the mean-frame and nearest-pose baselines, in ``config.evaluate.protocol``'s definitions."""
    first = results[0][1]
    h, w = first["frame_size_hw"]
    t, protocol = config.train, config.evaluate.protocol
    body = evaluate.body_ssim_key(protocol)
    lines = [
        "# Ablation on the synthetic subject: pix2pixHD vs +T.S. vs +T.S.+Face", "",
        f"Command: `{command}`", "",
        f"Held-out self-reenactment: {first['frames']} frames ({first['faces']} with a face) at {h}x{w}, each "
        "generated from its own stick figure, sequentially (every video from a blank first frame). "
        f"Training: {t.num_steps} global steps for pix2pixHD and +T.S. (batch {t.batch_size}); +T.S.+Face adds "
        f"{t.face.num_steps} face-GAN steps on top of +T.S. with its generator frozen. Body crop: the input pose's "
        f"box ({'cut out, then SSIM' if protocol == 'paper' else 'SSIM over windows centred in it'}; "
        f"{first['body_crop_hw'][0]}x{first['body_crop_hw'][1]} px for LPIPS); face crop: {first['face_crop_px']} "
        f"px (LPIPS on crops upsampled to 64 px). LPIPS-{first['lpips_net']}. Protocol: {protocol}. Baselines: the "
        "mean of 64 training frames, and for each held-out frame the training frame nearest by pose.", "",
        "| Method | body SSIM ↑ | body LPIPS ↓ | face SSIM ↑ | face LPIPS ↓ | frame SSIM ↑ | frame jitter (real: "
        f"{fmt(first['real']['frame_jitter'], 2)}) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(row, r["generated"]) for row, r in results] + [
        (evaluate.ROW_NAMES[name], first[name]) for name in held_out.BASELINES]
    for row, g in rows:
        cells = [fmt(g.get(k), 4) for k in (body, "body_lpips", "face_ssim", "face_lpips", "ssim")]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {fmt(g.get('frame_jitter'), 2)} |")
    key = "pose_paper" if protocol == "paper" else "pose"
    if key in first["generated"]:
        lines += ["", f"Pose distance ({evaluate.pose_units(first, protocol)}): the detector (MediaPipe Holistic, one "
                  "per stream of frames) on each frame vs the input keypoints, with the missed detections. Keypoint "
                  "jitter: mean displacement of detected points between consecutive frames (px/frame; the input "
                  f"poses: {fmt(first['input_keypoint_jitter']['overall'], 2)}). The last row is the detector on "
                  "the real held-out frames: the floor of every row above.", "",
                  "| Method | pose distance ↓ (body, face, hands, overall) | keypoint jitter |", "|---|---|---|"]
        rows = [(row, r["generated"]) for row, r in results] + [
            (evaluate.ROW_NAMES[name], first[name]) for name in ("nearest_train_frame", "real")]
        for row, s in rows:
            lines.append(f"| {row} | {evaluate.pose_cells(s[key], protocol)} | "
                         f"{fmt(s['keypoint_jitter']['overall'], 2)} |")
    return "\n".join(lines) + "\n"


def run_ablation(config, workdir: str, command: str = "", mesh=None) -> dict:
    """Trains (or resumes) both models on ``mesh`` (default: all devices), evaluates the three rows,
    writes ``ablation.md``/``.json``."""
    evaluate.validate_evaluate_config(config)
    command = command or f"python -m edn_jax.main --config configs/ablation.py --workdir {workdir}"
    dataset_dir = train_variants(config, workdir, mesh)
    lpips = metrics.make_lpips(config.evaluate.lpips_net)
    factory = (lambda: evaluate.make_detector(config)) if config.evaluate.pose_distance else None
    results = []
    for row, run, temporal, names, stage in VARIANTS:
        out_dir = os.path.join(workdir, filenames.EVALUATION, _slug(row))
        existing = os.path.join(out_dir, filenames.METRICS)
        if storage.exists(existing) and not config.overwrite:
            print(f"ablation: {row} already evaluated ({existing})")
            with storage.open(existing) as f:
                results.append((row, json.load(f)))
            continue
        print(f"ablation: evaluating {row} (the {stage} stage in {os.path.join(workdir, run)})")
        writer = metric_writers.create_default_writer(
            os.path.join(workdir, filenames.TENSORBOARD, f"ablation_{_slug(row)}"))
        try:  # fresh detectors per row: none carries what it saw in another row's frames
            result = evaluate.evaluate_model(variant_config(config, temporal, names, dataset_dir),
                                             os.path.join(workdir, run), out_dir, stage, lpips=lpips,
                                             detector_factory=factory, writer=writer)
        finally:
            writer.close()
        results.append((row, result))
    table = format_table(results, config, command)
    with atomic_path(os.path.join(workdir, "ablation.md")) as tmp, open(tmp, "w") as f:
        f.write(table)
    with atomic_path(os.path.join(workdir, "ablation.json")) as tmp, open(tmp, "w") as f:
        json.dump({row: result for row, result in results}, f, indent=2)
    print(table)
    print(f"ablation table written to {storage.absolute(storage.join(workdir, 'ablation.md'))}")
    return {"table": table, "results": dict(results)}
