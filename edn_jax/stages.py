"""The training stages a config asks for, and what a checkpoint records of the model so that a
trained model directory describes itself (``edn_jax.models.checks`` checks the config's values).

Training runs in the paper's stages (``config.train.stages``): "global" (the
GlobalGenerator at ``train.height x train.width``), "local" (the LocalEnhancer at twice
that size) and "face" (the face GAN on the last generator's output). ``plan_stages``
turns the config into ``Stage`` objects; every stage's trainer implements
``StageTrainer``, so the training loop treats them alike.

Every checkpoint stores the model signature (what must match to restore it) and the
training record (every model, loss and training field the run used). Evaluation and
transfer rebuild the networks from that record (``config_from_record``), so they need no
training config: an explicit setting that contradicts the record is an error naming the
field.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Iterable, Protocol

from flax import traverse_util

from configs import default
from edn_jax.errors import EdnError

STAGE_ORDER = ("global", "local", "face")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage as configured: what it trains, at what size, for how long."""

    name: str            # global | local | face
    number: int          # 1-based position among the configured stages
    count: int
    height: int
    width: int
    num_steps: int
    decay_steps: int
    generator: str       # the main generator it trains (global/local stages) or refines (face stage)
    previous: "Stage | None" = None  # the stage whose final checkpoint it starts from
    num_d: int = 2       # its multiscale discriminator's scales

    @property
    def title(self) -> str:
        return f"stage {self.number}/{self.count} ({self.name}, {self.height}x{self.width})"


class StageTrainer(Protocol):
    """What the training loop needs of a stage: its jitted pieces behind one interface."""

    config: Any
    stage: Stage
    lr_schedule: Any

    def init(self, seed: int): ...                       # a fresh state (stages without a previous one)
    def init_from(self, seed: int, previous): ...        # the first state from the previous stage's final one
    def step(self, state, batch, step: int | None = None): ...  # (state, metrics)
    def sample(self, state, batch): ...                  # frame t as the step renders it, for sample grids
    def renderer(self, state): ...                       # (inference.Renderer, params) of the model in ``state``
    def abstract_state(self): ...                        # the state's shapes, replicated on the mesh
    def signature(self) -> dict: ...


def stage_names(stages: str) -> list[str]:
    return [n.strip() for n in str(stages).split(",") if n.strip()]


def plan_stages(config) -> list[Stage]:
    """``config.train.stages`` as Stage objects, checked: known names, paper order, global first."""
    t = config.train
    names = stage_names(t.stages)
    fix = "use global, global,local, global,face or global,local,face"
    unknown = [n for n in names if n not in STAGE_ORDER]
    if not names or unknown:
        raise EdnError(f"train.stages={t.stages!r} names no known stage" if not names else
                       f"train.stages={t.stages!r}: {', '.join(unknown)} is not a stage", fix)
    if names != sorted(set(names), key=STAGE_ORDER.index) or names[0] != "global":
        raise EdnError(f"train.stages={t.stages!r} is out of order or repeats a stage (each stage starts from "
                       "the previous one's checkpoint, beginning with global)", fix)
    stages: list[Stage] = []
    height, width, kind = t.height, t.width, "global"
    num_d = {"global": config.model.num_d, "local": config.model.num_d_local, "face": config.model.num_d_face}
    for number, name in enumerate(names, 1):
        if name == "global":
            steps, decay = t.num_steps, t.decay_steps
        elif name == "local":
            height, width, kind = 2 * height, 2 * width, "local"
            steps, decay = t.local.num_steps, t.local.decay_steps
        else:
            steps, decay = t.face.num_steps, t.face.decay_steps
        stages.append(Stage(name, number, len(names), height, width, steps, decay, kind,
                            stages[-1] if stages else None, num_d[name]))
    return stages


# Stage lengths that may be given in epochs: (section, epochs field, steps field).
EPOCH_FIELDS = (("train", "num_epochs", "num_steps"), ("train", "decay_epochs", "decay_steps"),
                ("train.local", "num_epochs", "num_steps"), ("train.local", "decay_epochs", "decay_steps"),
                ("train.face", "num_epochs", "num_steps"), ("train.face", "decay_epochs", "decay_steps"),
                ("train.face", "d_alone_epochs", "d_alone_steps"))


def config_section(config, path: str):
    for part in path.split("."):
        config = config[part]
    return config


def epochs_to_steps(epochs: float, num_pairs: int, batch_size: int) -> int:
    """Steps that show every one of ``num_pairs`` training pairs ``epochs`` times, ``batch_size`` per step."""
    return int(math.ceil(epochs * num_pairs / batch_size - 1e-9))


def resolve_epochs(config, num_pairs: int):
    """``config`` with every stage length given in epochs (a field > 0) turned into its steps
    field, for a dataset of ``num_pairs`` training pairs; lengths in steps are left as they are."""
    out = copy.deepcopy(config)
    for path, epochs_field, steps_field in EPOCH_FIELDS:
        section = config_section(out, path)
        if section[epochs_field] > 0:
            section[steps_field] = epochs_to_steps(section[epochs_field], num_pairs, config.train.batch_size)
    return out


_PAPER_HEIGHT, _PAPER_WIDTH, _PAPER_CROP = 512, 1024, 128


def face_crop_size(height: int, width: int) -> int:
    """The paper's 128 px crop at 512x1024, scaled with the frame, a multiple of 8, at least 16.

    A multiple of 8 so the face generator's three 2x downsamplings divide it.
    """
    scaled = _PAPER_CROP * min(height / _PAPER_HEIGHT, width / _PAPER_WIDTH)
    size = max(16, int(round(scaled / 8)) * 8)
    if size > min(height, width):
        raise EdnError(f"a {height}x{width} frame is too small for a {size} px face crop",
                       "use frames of at least 16x16")
    return size


def face_crop_side(config, height: int, width: int) -> int:
    """The face crop's side at a frame size: ``model.face_crop``, or the paper's 128 at 512x1024 scaled."""
    side = config.model.face_crop or face_crop_size(height, width)
    factor = 2 ** config.model.face_n_downsampling
    if side % factor or not 0 < side <= min(height, width):
        raise EdnError(f"model.face_crop={side} must be a positive multiple of 2^face_n_downsampling = {factor} "
                       f"no larger than the {height}x{width} frame", "set model.face_crop=0 for the scaled default")
    return side


# ----------------------------------------------------------------------------- what a checkpoint records

SIGNATURE_FIELDS = {
    "global": ("ngf", "n_downsampling", "n_blocks", "ndf", "n_layers_d", "num_d", "use_prev_label", "temporal",
               "background", "plate_fill", "composite_region", "exemplar", "exemplar_warp"),
    "local": ("local_ngf", "n_blocks_local"),
    "face": ("face_ngf", "face_n_downsampling", "face_n_blocks", "face_ndf", "face_n_layers_d"),
}
# Fields of a stage's own discriminator, in its signature from the stage on (a face stage after a
# global one has no local D).
STAGE_SIGNATURE_FIELDS = {"global": (), "local": ("num_d_local",), "face": ("num_d_face", "face_d_norm")}
# Fields added after models were trained without them, and what those models used: a signature
# or record without the field is read with it (one D for every stage, an InstanceNorm face D, G's
# own output as the previous frame, the ImageNet-normalised VGG input at full weight, no background plate
# and no exemplar, unwarped; a plate holding the median of all frames where the person always stands,
# and an unconfined composite mask).
LEGACY_COPIES = {"model.num_d_local": "model.num_d", "model.num_d_face": "model.num_d"}
LEGACY_VALUES = {"model.face_d_norm": "instance", "model.face_prev": "raw", "loss.vgg_input": "imagenet",
                 "loss.global_vgg_scale": 1.0, "model.background": "none", "model.exemplar": "none",
                 "model.exemplar_warp": "none", "model.plate_fill": "median", "model.composite_region": 0.0}
RECORDED_SECTIONS = ("model", "loss", "train")
# The model field that may change after training (the activations' dtype; params stay float32).
FREE_AT_INFERENCE = frozenset({"model.dtype"})
# Fields that decide the networks and the stage plan: an explicit value must equal the record's.
PLAN_FIELDS = ("train.stages", "train.height", "train.width")


def signature_fields(stage_name: str | None, generator: str | None) -> tuple[str, ...]:
    """The model fields a stage's signature holds: the global generator's and D's, the local
    branch's with a LocalEnhancer, the face networks' in the face stage, and the stage's own D's."""
    fields = SIGNATURE_FIELDS["global"] + (SIGNATURE_FIELDS["local"] if generator == "local" else ())
    if stage_name == "face":
        fields += SIGNATURE_FIELDS["face"]
    return fields + STAGE_SIGNATURE_FIELDS.get(stage_name, ())


def model_signature(config, stage: Stage | None = None) -> dict:
    """What must match for a stage's checkpoint to be restored into this configuration
    (the architecture and frame size; not the compute dtype, which may change on resume)."""
    stage = stage or plan_stages(config)[0]
    fields = signature_fields(stage.name, stage.generator)
    signature = {"stage": stage.name, "generator": stage.generator,
                 "model": {k: config.model[k] for k in fields}, "height": stage.height, "width": stage.width}
    if stage.name == "face":
        signature["face_crop"] = face_crop_side(config, stage.height, stage.width)
    return signature


def with_legacy_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Flat ``fields`` ({"model.ngf": ...}) with the ``LEGACY_*`` fields they lack filled in as
    the models trained before those fields existed had them."""
    out = dict(fields)
    for key, source in LEGACY_COPIES.items():
        if key not in out and source in out:
            out[key] = out[source]
    for key, value in LEGACY_VALUES.items():
        out.setdefault(key, value)
    return out


def upgraded_signature(signature: dict) -> dict:
    """A stored signature with the stage-D fields it lacks (written before they existed) filled in
    as those models had them, for comparing with this version's ``model_signature``."""
    if not isinstance(signature, dict) or not isinstance(signature.get("model"), dict):
        return signature
    model = with_legacy_values({f"model.{k}": v for k, v in signature["model"].items()})
    wanted = signature_fields(signature.get("stage"), signature.get("generator"))
    return dict(signature, model={k: model[f"model.{k}"] for k in wanted if f"model.{k}" in model})


def training_record(config) -> dict:
    """Every model, loss and training field of ``config`` (JSON types), as a checkpoint stores them."""
    return {section: config[section].to_dict() for section in RECORDED_SECTIONS}


def flat_fields(record: dict) -> dict[str, Any]:
    """A record (or config dict) as {"model.ngf": 16, "train.face.num_steps": 400, ...}."""
    return traverse_util.flatten_dict(record, sep=".")


def record_from_signatures(signatures: dict[str, dict]) -> dict[str, Any]:
    """The flat fields that checkpoints written before training records existed still tell:
    the architecture and sizes in each stage's signature, and the stages present."""
    fields: dict[str, Any] = {}
    for name in STAGE_ORDER:
        signature = signatures.get(name)
        if signature is None:
            continue
        fields.update({f"model.{k}": v for k, v in signature["model"].items()})
        shrink = 2 if signature["generator"] == "local" else 1
        fields["train.height"], fields["train.width"] = signature["height"] // shrink, signature["width"] // shrink
    fields["train.stages"] = ",".join(n for n in STAGE_ORDER if n in signatures)
    return fields


def explicit_fields(config, overrides: Iterable[str] = ()) -> set[str]:
    """The recorded fields a user set: named on the command line (``overrides``), or set by the
    config file to something other than ``configs/default.py``'s value."""
    defaults = flat_fields({s: default.get_config()[s].to_dict() for s in RECORDED_SECTIONS})
    current = flat_fields(training_record(config))
    differ = {k for k, v in current.items() if defaults.get(k, object()) != v}
    return differ | {k for k in overrides if k.split(".")[0] in RECORDED_SECTIONS}


def _same(a, b) -> bool:
    as_list = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731  (JSON turns tuples into lists)
    return as_list(a) == as_list(b)


def config_from_record(config, stored: dict[str, Any], explicit: Iterable[str], where: str):
    """``config`` with every recorded field (flat ``stored``) as the model was trained, for rebuilding it.

    An ``explicit`` field that decides the networks or the stage plan (``model.*`` but the
    compute dtype, ``PLAN_FIELDS``) and contradicts the record is an error naming it. Any
    other explicit field wins (``model.dtype``; a stage's ``num_steps``, to use a stage
    stopped early); every field not set explicitly takes the recorded value.
    """
    explicit = set(explicit)
    checked = {k for k in stored if k.startswith("model.") or k in PLAN_FIELDS} - FREE_AT_INFERENCE
    out = copy.deepcopy(config)
    with out.unlocked():
        for key, value in stored.items():
            *path, name = key.split(".")
            section = out
            for part in path:
                section = section[part]
            if name not in section:
                continue  # a field this version no longer has
            if key in explicit and not _same(section[name], value):
                if key in checked:
                    raise EdnError(f"--config.{key}={section[name]!r} conflicts with the model in {where}, trained "
                                   f"with {key}={value!r}", "drop the override (the model directory records "
                                   "its settings), or point at a model trained with it")
                continue
            section[name] = tuple(value) if isinstance(section[name], tuple) else value
    return out
