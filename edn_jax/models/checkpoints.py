"""Checkpoints: Orbax per stage, preemption, restores, and trained models loaded for inference.

Each stage checkpoints to ``<workdir>/checkpoints/<stage>``: the state (Orbax
``StandardSave``) and JSON metadata (the input pipeline's position, the model
signature, the training record: every model, loss and training field, and the
dataset). Orbax decides when to save (``save_interval_steps`` as a fixed-interval
policy, the stage's last step, and the preemption sync point that
``jax.distributed`` starts on multi-host TPU slices); a single process turns SIGTERM
into the same decision itself.

``load_trained_model`` rebuilds a finished stage for rendering from the directory alone
(``stages.config_from_record``): only the generators' params are restored, so
evaluation and transfer need neither the training config nor the trainers.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from edn_jax import filenames
from edn_jax.conditioning import background
from edn_jax.data import dataset
from edn_jax.errors import EdnError
from edn_jax.models.checks import validate_train_config
from edn_jax.models.factory import EXEMPLAR_CHANNELS, build_face_models, build_generator, uses_exemplar
from edn_jax.models.inference import Renderer, generator_input
from edn_jax.runtime import sharding, storage
from edn_jax.stages import (STAGE_ORDER, Stage, config_from_record, face_crop_side, flat_fields, model_signature,
                            plan_stages, record_from_signatures, upgraded_signature, with_legacy_values)


def checkpoint_root(workdir: str) -> str:
    """Where the checkpoints of a workdir's stages live (a URL stays a URL: Orbax writes ``gs://`` itself)."""
    return storage.absolute(storage.join(workdir, filenames.CHECKPOINTS))


def checkpoint_dir(workdir: str, stage_name: str) -> str:
    return storage.join(checkpoint_root(workdir), stage_name)


class Checkpoints:
    """Orbax manager for one stage's state plus JSON metadata (input position, model signature, record).

    ``every`` > 0 saves every that many steps and at ``last_step``; 0 saves only when asked
    with ``force``; ``read_only`` (restores for rendering) creates and writes nothing. Use as a
    context manager while training: it turns SIGTERM into ``preempted`` (one process; several
    processes use JAX's preemption sync point) and closes the manager.
    """

    def __init__(self, directory: str, signature: dict, keep: int = 3, every: int = 0, last_step: int = 0,
                 extra_meta: dict | None = None, read_only: bool = False):
        self.directory = storage.absolute(directory)
        policies = [ocp.checkpoint_managers.PreemptionCheckpointingPolicy()]
        if every > 0:
            policies += [ocp.checkpoint_managers.FixedIntervalPolicy(every),
                         ocp.checkpoint_managers.SpecificStepsPolicy([last_step])]
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                                 save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(policies)))
        self.signature = signature
        self.extra_meta = extra_meta or {}
        self._sigterm = False
        self._previous_handler = None

    def __enter__(self) -> "Checkpoints":
        if jax.process_count() == 1:  # several processes: jax.distributed's preemption notice instead
            try:
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:  # not the main thread: leave signals alone
                self._previous_handler = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
        self.close()

    def _on_sigterm(self, signum, frame) -> None:
        self._sigterm = True

    @property
    def sigterm(self) -> bool:
        return self._sigterm

    def preempted(self, step: int) -> bool:
        """Whether to save and stop after ``step`` (call once per step on every process)."""
        return self._sigterm or self.manager.reached_preemption(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, input_state: dict, force: bool = False) -> bool:
        """Saves if Orbax's policy says so at ``step`` (or ``force``); returns whether it did."""
        if not force and not self.manager.should_save(step):
            return False
        meta = {"input": input_state, "signature": self.signature, **self.extra_meta}
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               meta=ocp.args.JsonSave(meta)), force=True)

    def meta(self, step: int) -> dict:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any failure to read is a corrupt checkpoint to the user
            raise EdnError(f"cannot read the checkpoint at step {step} in {self.directory} ({type(e).__name__})",
                           "delete that step's directory to fall back to an earlier one, or use a new --workdir")

    def _checked_meta(self, step: int) -> dict:
        meta = self.meta(step)
        if upgraded_signature(meta.get("signature")) != self.signature:
            raise EdnError(f"{self.directory} holds a checkpoint of a different model ({meta.get('signature')})",
                           "use a new --workdir, or the config that trained it")
        return meta

    def _restore_state(self, step: int, args) -> Any:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]
        except Exception as e:  # noqa: BLE001
            raise EdnError(f"cannot restore the checkpoint at step {step} in {self.directory} ({first_sentence(e)})",
                           "delete that step's directory or use a new --workdir")

    def restore(self, step: int, abstract_state):
        """(state, meta) at ``step``, into ``abstract_state``'s shapes and shardings."""
        meta = self._checked_meta(step)
        return self._restore_state(step, ocp.args.StandardRestore(abstract_state)), meta

    def restore_subtree(self, step: int, abstract: dict):
        """(the state's fields named in ``abstract`` only, meta): e.g. a generator's params without
        the optimizer states and discriminators."""
        meta = self._checked_meta(step)
        args = ocp.args.PyTreeRestore(abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                      partial_restore=True)
        return self._restore_state(step, args), meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def first_sentence(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` cut at the end of a sentence (or a word), never mid-word: one readable clause
    of an exception whose text may run to pages (Orbax's and TensorStore's do)."""
    text = " ".join(str(error).split())
    for end in (". ", "; "):
        cut = text.find(end, 20)
        if 0 < cut < limit:
            text = text[:cut]
            break
    else:
        if len(text) > limit:
            text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unfinished_error(directory: str, step: int | None, stage: Stage) -> EdnError:
    found = "no checkpoint" if step is None else f"checkpoints up to step {step}"
    return EdnError(f"{directory} holds {found}, but the {stage.name} stage trains {stage.num_steps} steps",
                    f"train it first (--config.mode=train with {stage.name} in train.stages and the same --workdir), "
                    "or point --workdir at a trained run")


def restore_final(workdir: str, stage: Stage, signature: dict, abstract_state, keep: int = 3):
    """The final state of a stage from its checkpoints; refuses a missing or unfinished stage."""
    checkpoints = Checkpoints(checkpoint_dir(workdir, stage.name), signature, keep, read_only=True)
    try:
        step = checkpoints.latest_step()
        if step is None or step < stage.num_steps:
            raise unfinished_error(checkpoints.directory, step, stage)
        state, _ = checkpoints.restore(step, abstract_state)
    finally:
        checkpoints.close()
    return state


# ----------------------------------------------------------------------------- trained models


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """What rendering needs from a trained workdir: the renderer, its params, the stage they came
    from, the config rebuilt from the training record, and the dataset it was trained on ("" if unknown)."""

    renderer: Renderer
    params: dict
    stage: Stage
    config: Any
    dataset_dir: str = ""


def _newest_meta(directory: str) -> dict | None:
    checkpoints = Checkpoints(directory, {}, read_only=True)
    try:
        step = checkpoints.latest_step()
        return None if step is None else dict(checkpoints.meta(step), step=step)
    finally:
        checkpoints.close()


def trained_config(config, model_workdir: str, explicit: Iterable[str] = ()):
    """(config as the model in ``model_workdir`` was trained, its newest stage's metadata).

    From the training record of the newest stage's checkpoint, or, for checkpoints written
    before records existed, from every stage's model signature. ``explicit`` fields that
    contradict it are an error naming the field (``stages.config_from_record``).
    """
    root = checkpoint_root(model_workdir)
    if not storage.isdir(root):
        raise EdnError(f"{storage.absolute(model_workdir)} has no checkpoints directory",
                       "pass the --workdir of a training run (python -m edn_jax.main --config ... with mode=train)")
    metas = {name: meta for name in STAGE_ORDER if storage.isdir(storage.join(root, name))
             and (meta := _newest_meta(storage.join(root, name))) is not None}
    if not metas:
        raise EdnError(f"{root} holds no checkpoint", "train a model there first (mode=train)")
    newest = metas[[n for n in STAGE_ORDER if n in metas][-1]]
    if "record" in newest:
        stored = flat_fields(newest["record"])
    else:  # written before training records: the signatures still tell the networks and sizes
        stored = record_from_signatures({name: meta["signature"] for name, meta in metas.items()})
    return config_from_record(config, with_legacy_values(stored), explicit, storage.absolute(model_workdir)), newest


def load_trained_model(config, model_workdir: str, stage_name: str = "", explicit: Iterable[str] = (),
                       mesh=None) -> TrainedModel:
    """A stage's final model from ``model_workdir`` (for transfer or evaluation): the last trained
    stage's, or ``stage_name``'s. Networks come from the directory's training record; ``config``
    supplies what may differ at inference (``model.dtype``)."""
    cfg, newest = trained_config(config, model_workdir, explicit)
    validate_train_config(cfg, check_batch=False)
    stages = plan_stages(cfg)
    if stage_name and stage_name not in [s.name for s in stages]:
        raise EdnError(f"stage {stage_name!r} is not one of the stages the model in {storage.absolute(model_workdir)} "
                       f"was trained in ({cfg.train.stages})",
                       f"use one of: {', '.join(s.name for s in stages)} (or '' for the last)")
    stage = next(s for s in stages if s.name == stage_name) if stage_name else stages[-1]
    generator = build_generator(cfg, stage.generator)
    image = jnp.zeros((1, stage.height, stage.width, 3), jnp.float32)
    g_in = generator_input(image, image, image, cfg.model.use_prev_label, cfg.model.temporal,
                           image if background.uses_plate(cfg.model.background) else None,
                           jnp.zeros((1, stage.height, stage.width, EXEMPLAR_CHANNELS))
                           if uses_exemplar(cfg.model.exemplar) else None)
    abstract = {"g_params": jax.eval_shape(generator.init, jax.random.PRNGKey(0), g_in)["params"]}
    face_generator, side = None, 0
    if stage.name == "face":
        face_generator = build_face_models(cfg)[0]
        side = face_crop_side(cfg, stage.height, stage.width)
        crop = jnp.zeros((1, side, side, 3), jnp.float32)
        abstract["face_g_params"] = jax.eval_shape(face_generator.init, jax.random.PRNGKey(0), crop, crop)["params"]
    mesh = mesh or sharding.make_mesh()
    checkpoints = Checkpoints(checkpoint_dir(model_workdir, stage.name), model_signature(cfg, stage), read_only=True)
    try:
        step = checkpoints.latest_step()
        recorded = "record" in newest
        if step is None or (recorded and step < stage.num_steps):
            raise unfinished_error(checkpoints.directory, step, stage)
        params, meta = checkpoints.restore_subtree(step, sharding.replicated_abstract(abstract, mesh))
    finally:
        checkpoints.close()
    if not recorded:  # the plan's step counts are not known: the newest checkpoint is the final one
        stage = dataclasses.replace(stage, num_steps=step)
    renderer = Renderer.from_config(cfg, generator, face_generator, side)
    return TrainedModel(renderer, {"g": params["g_params"], "face": params.get("face_g_params"), "background": None},
                        stage, cfg, meta.get("dataset", ""))


def with_plate(model: TrainedModel, dataset_dir: str) -> TrainedModel:
    """``model`` with its background plate in its params, computed from the dataset it was trained
    on (``background.plate_from_split``, as training computed it); unchanged without ``model.background``."""
    if not model.renderer.uses_plate:
        return model
    split = dataset.open_split(dataset_dir, "train")
    plate = background.to_unit(background.plate_from_split(split, model.stage.height, model.stage.width,
                                                           model.renderer.model.plate_fill).image)
    return dataclasses.replace(model, params=dict(model.params, background=jnp.asarray(plate)))

