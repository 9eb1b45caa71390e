"""Training: pix2pixHD with temporal smoothing in stages, one sharded jitted step per stage.

``train_and_evaluate(config, workdir)`` builds (or opens) the dataset and runs the
configured stages in order (``config.train.stages``, see ``stages.plan_stages``):
"global" and "local" (``edn_jax.training.generator_stage``) and "face" (``edn_jax.training.face_stage``,
the face GAN with the main generator frozen). Each stage creates its state already
sharded over a data-parallel mesh, then loops: batch -> jitted step -> metrics, samples
and checkpoints under ``workdir/checkpoints/<stage>``. A stage starts from the previous
stage's final checkpoint, resumes from its own newest one (also after SIGTERM, which
saves one first) and, because the input pipeline is a pure function of (seed, step), a
resumed run reproduces an uninterrupted one exactly. Each stage ends with the held-out
evaluation's short version (``held_out.evaluate_held_out``).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from flax import traverse_util
from jax.sharding import Mesh

from edn_jax import filenames
from edn_jax.conditioning import background, exemplar
from edn_jax.data import build, dataset, input_pipeline, pair_schedule
from edn_jax.errors import EdnError
from edn_jax.evaluation import evaluate, held_out
from edn_jax.models import checkpoints
from edn_jax.models.checks import validate_train_config
from edn_jax.models.factory import uses_exemplar
from edn_jax.runtime import images, progress, sharding, storage
from edn_jax.runtime.fileio import atomic_path
from edn_jax.stages import (EPOCH_FIELDS, Stage, config_section, face_crop_side, model_signature, plan_stages,
                            resolve_epochs, training_record)
from edn_jax.training.face_stage import FaceTrainer
from edn_jax.training.generator_stage import GeneratorTrainer

TRAINERS = {"global": GeneratorTrainer, "local": GeneratorTrainer, "face": FaceTrainer}
HOLDOUT_FRAMES = 64  # held-out frames the end of each stage scores


def make_trainer(config, mesh: Mesh, stage: Stage):
    """The trainer of a stage (a ``stages.StageTrainer``)."""
    return TRAINERS[stage.name].create(config, mesh, stage)


def stage_checkpoints(workdir: str, config, stage: Stage, signature: dict, dataset_dir: str = ""):
    """The Orbax checkpoints of one stage, saving every ``train.checkpoint_every`` steps and at its end."""
    extra = {"record": training_record(config), "dataset": storage.absolute(dataset_dir)} if dataset_dir else None
    return checkpoints.Checkpoints(checkpoints.checkpoint_dir(workdir, stage.name), signature,
                                   config.train.keep_checkpoints, every=config.train.checkpoint_every,
                                   last_step=stage.num_steps, extra_meta=extra)


def restore_final(workdir: str, config, mesh: Mesh, stage: Stage):
    """The final state of a trained stage (e.g. the previous one, to start from)."""
    return checkpoints.restore_final(workdir, stage, model_signature(config, stage),
                                     TRAINERS[stage.name].abstract(config, mesh, stage), config.train.keep_checkpoints)


def _start_state(workdir: str, trainer, mesh: Mesh, ckpt: checkpoints.Checkpoints):
    """(state, first step): resumed from this stage's newest checkpoint, else started from the
    previous stage's final one, else fresh."""
    config, stage = trainer.config, trainer.stage
    start = ckpt.latest_step()
    if start is not None:
        state, meta = ckpt.restore(start, trainer.abstract_state())
        start = int(meta["input"]["step"])
        print(f"{stage.title}: resuming from the checkpoint at step {start} in {ckpt.directory}")
        return state, start
    if stage.previous is None:
        return trainer.init(config.train.seed), 0
    previous = restore_final(workdir, config, mesh, stage.previous)
    print(f"{stage.title}: starting from the {stage.previous.name} stage's final checkpoint "
          f"(step {stage.previous.num_steps})")
    return trainer.init_from(config.train.seed + stage.number - 1, previous), 0


def _check_finite(metrics: dict, step: int, stage: Stage, ckpt: checkpoints.Checkpoints) -> dict:
    """The step's metrics on the host; a NaN/Inf stops training, keeping the last good checkpoint."""
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if values.pop("nonfinite") > 0 or not all(np.isfinite(list(values.values()))):
        ckpt.wait()
        raise EdnError(f"training diverged: a loss or gradient became NaN/Inf by step {step} of the {stage.name} "
                       f"stage; the last good checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}",
                       "lower train.learning_rate or use model.dtype=float32, then resume")
    return values


def _write_samples(writer, trainer, state, batch, step: int, samples_dir: str) -> None:
    fake = trainer.sample(state, batch)
    n = min(4, trainer.config.train.batch_size)
    grid = images.image_grid(*(sharding.to_host(x)[:n] for x in (batch.label, fake, batch.image)))
    writer.write_images(step, {"samples/stick_generated_real": grid[None]})
    if jax.process_index() == 0:
        images.write_png(os.path.join(samples_dir, filenames.sample_grid(step)), grid)


def stage_plate(config, split, stage: Stage) -> background.Plate | None:
    """The background plate of a stage's frame size, or None without ``model.background``."""
    if not background.uses_plate(config.model.background):
        return None
    return background.plate_from_split(split, stage.height, stage.width, config.model.plate_fill)


def stage_exemplars(config, split, stage: Stage):
    """Each training record's exemplar candidates (``exemplar.training_candidates`` at the stage's
    frame size), or None without ``model.exemplar``."""
    if not uses_exemplar(config.model.exemplar):
        return None
    poses = dataset.split_keypoints(split, stage.height, stage.width)
    return exemplar.training_candidates(poses, split.video_ids, split.frame_indices, config.train.exemplar_exclude,
                                        config.train.exemplar_candidates)


def evaluate_stage(config, workdir: str, trainer, state, dataset_dir: str, writer, step: int, plate=None) -> dict:
    """The stage's held-out scores (the evaluator's short version), logged, printed and returned flat."""
    stage = trainer.stage
    renderer, params = trainer.renderer(state, None if plate is None else background.to_unit(plate))
    side = renderer.face_crop if renderer.has_face else face_crop_side(config, stage.height, stage.width)
    result, _, grid = held_out.evaluate_held_out(
        renderer, params, dataset_dir, stage.height, stage.width,
        lpips=evaluate.lpips_or_none(config.evaluate.lpips_net), face_side=side, max_frames=HOLDOUT_FRAMES,
        chunk_frames=config.evaluate.chunk_frames, desc=f"{stage.title} held-out evaluation")
    scores = evaluate.holdout_summary(result)
    writer.write_scalars(step, {f"holdout/{k}": v for k, v in scores.items()})
    writer.write_images(step, {"holdout/stick_generated_real": grid[None]})
    if jax.process_index() == 0:
        images.write_png(os.path.join(workdir, filenames.holdout_samples(stage.name)), grid)
    print(f"{stage.title}: held-out SSIM ({scores['holdout_frames']} frames), generated vs mean training "
          f"frame: whole frame {scores['ssim_generated']:.3f} vs {scores['ssim_mean_train_frame']:.3f}, "
          f"body crop {scores['body_ssim_generated']:.3f} vs {scores['body_ssim_mean_train_frame']:.3f}")
    print(f"{stage.title}: held-out nearest training frame by pose: whole frame "
          f"{scores['ssim_nearest_train_frame']:.3f}, body crop {scores['body_ssim_nearest_train_frame']:.3f}")
    if "face_l1_without_face" in scores:
        lp = lambda k: f", LPIPS {scores[k]:.4f}" if k in scores else ""  # noqa: E731
        print(f"{stage.title}: held-out face crops ({scores['holdout_faces']} faces): with the face "
              f"residual L1 {scores['face_l1_generated']:.4f}{lp('face_lpips_generated')}; before the face "
              f"stage L1 {scores['face_l1_without_face']:.4f}{lp('face_lpips_without_face')}")
    return scores


def train_stage(config, workdir: str, stage: Stage, mesh: Mesh, split, dataset_dir: str) -> dict:
    """Trains one stage to its num_steps (resuming if it has checkpoints); returns its summary."""
    t = config.train
    trainer = make_trainer(config, mesh, stage)
    with stage_checkpoints(workdir, config, stage, trainer.signature(), dataset_dir) as ckpt:
        state, start = _start_state(workdir, trainer, mesh, ckpt)
        summary = {"stage": stage.name, "height": stage.height, "width": stage.width, "checkpoints": ckpt.directory}
        if start >= stage.num_steps:
            print(f"{stage.title}: already trained for {start} steps (num_steps={stage.num_steps}); skipped")
            return dict(summary, step=start, skipped=True, state=state, trainer=trainer)
        print(f"{stage.title}: training steps {start + 1}..{stage.num_steps}")
        logging.info("%s: training steps %d..%d", stage.title, start + 1, stage.num_steps)

        writer = metric_writers.create_default_writer(os.path.join(workdir, filenames.TENSORBOARD, stage.name),
                                                      just_logging=jax.process_index() > 0)
        if start == 0:
            flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
            writer.write_hparams(dict({k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))},
                                      stage=stage.name))
        pair_index = pair_schedule.PairIndex.from_source(split.source, split.video_ids, split.frame_indices)
        samples_dir = os.path.join(workdir, filenames.SAMPLES, stage.name)
        plate = stage_plate(config, split, stage)
        if plate is not None:
            print(plate.report())
            if jax.process_index() == 0:  # the plate, and white where it was filled (never seen free)
                images.write_png(os.path.join(workdir, filenames.background(stage.name)), plate.image)
                images.write_png(os.path.join(workdir, filenames.background(stage.name, filled=True)),
                                 np.repeat(plate.filled[..., None], 3, axis=-1).astype(np.uint8) * 255)
            plate = plate.image
        last_metrics: dict = {}
        step, preempted = start, False
        options = input_pipeline.PipelineOptions.for_stage(config, stage, plate, stage_exemplars(config, split, stage))
        with input_pipeline.make_train_iterator(split.source, options, mesh, start_step=start,
                                                pair_index=pair_index) as batches, \
                progress.Progress(stage.num_steps - start, f"{stage.title} training ({dataset_dir})",
                                  unit="steps") as bar:
            while step < stage.num_steps:
                _, batch = next(batches)
                state, metrics = trainer.step(state, batch, step)
                step += 1
                bar.update()
                if step % t.log_every == 0 or step == stage.num_steps:
                    last_metrics = _check_finite(metrics, step, stage, ckpt)
                    last_metrics.update(learning_rate=float(trainer.lr_schedule(step)), stage=float(stage.number),
                                        steps_per_sec=bar.rate)
                    writer.write_scalars(step, last_metrics)
                if step % t.sample_every == 0 or step == stage.num_steps:
                    _write_samples(writer, trainer, state, batch, step, samples_dir)
                preempted = ckpt.preempted(step)
                ckpt.save(step, state, {"step": step}, force=preempted)
                if preempted:
                    ckpt.wait()
                    print(f"SIGTERM: saved a checkpoint at step {step}; rerun the same command to resume the "
                          f"{stage.name} stage")
                    break
        ckpt.wait()
    summary.update(step=int(step), metrics=last_metrics, samples=samples_dir, preempted=preempted)
    if step >= stage.num_steps and t.evaluate_holdout:
        summary["holdout"] = evaluate_stage(config, workdir, trainer, state, dataset_dir, writer, step, plate)
    writer.flush()
    return dict(summary, state=state, trainer=trainer)


def carry_over_skipped(results: list[dict], summary_path: str) -> None:
    """A stage skipped as already trained keeps what the run that trained it reported (its final
    metrics and held-out scores, from the workdir's earlier summary), so a rerun never drops them."""
    try:
        with storage.open(summary_path) as f:
            earlier = {entry["stage"]: entry for entry in json.load(f).get("stages", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    for result in results:
        before = earlier.get(result["stage"])
        if result.get("skipped") and before:
            for key in ("metrics", "holdout", "samples"):
                if key in before and key not in result:
                    result[key] = before[key]


def steps_from_epochs(config, split):
    """``config`` with the stage lengths given in epochs turned into steps for ``split``'s pairs
    (``stages.resolve_epochs``), each conversion printed, and checked again."""
    if not any(config_section(config, path)[field] > 0 for path, field, _ in EPOCH_FIELDS):
        return config
    num_pairs = len(pair_schedule.PairIndex.from_source(split.source, split.video_ids, split.frame_indices))
    resolved = resolve_epochs(config, num_pairs)
    for path, field, steps_field in EPOCH_FIELDS:
        if config_section(config, path)[field] > 0:
            print(f"{path}.{field}={config_section(config, path)[field]:g}: {path}.{steps_field}="
                  f"{config_section(resolved, path)[steps_field]} ({num_pairs} training pairs, batch "
                  f"{config.train.batch_size})")
    validate_train_config(resolved)
    return resolved


def train_and_evaluate(config, workdir: str, mesh: Mesh | None = None) -> dict:
    """Trains every configured stage in order (resuming where the workdir left off) on ``mesh``
    (default: every device of every host); returns the summary (per stage under ``stages``) with
    the last stage's ``state`` and ``trainer``."""
    validate_train_config(config)
    storage.makedirs(workdir)
    split, dataset_dir = build.open_training_data(config, workdir)
    config = steps_from_epochs(config, split)
    mesh = mesh or sharding.make_mesh()
    results = []
    for stage in plan_stages(config):
        result = train_stage(config, workdir, stage, mesh, split, dataset_dir)
        results.append(result)
        if result.get("preempted"):
            break
    carry_over_skipped(results, os.path.join(workdir, filenames.TRAIN_SUMMARY))
    last = results[-1]
    public = lambda r: {k: v for k, v in r.items() if k not in ("state", "trainer")}  # noqa: E731
    summary = {"stage": last["stage"], "step": last["step"], "dataset": dataset_dir,
               "checkpoints": checkpoints.checkpoint_root(workdir),
               "samples": storage.absolute(storage.join(workdir, filenames.SAMPLES)),
               "stages": [public(r) for r in results]}
    if "holdout" in last:
        summary["holdout"] = last["holdout"]
    if jax.process_index() == 0:
        with atomic_path(os.path.join(workdir, filenames.TRAIN_SUMMARY)) as tmp, open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
    return dict(summary, state=last["state"], trainer=last["trainer"])
