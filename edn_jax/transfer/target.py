"""The trained target a transfer renders as: its model (rebuilt from the record in its checkpoints),
its pose statistics in the model's frame for normalization, and the training frames an exemplar
model looks its exemplars up in."""

from __future__ import annotations

import dataclasses

import numpy as np

from edn_jax.conditioning import background, exemplar
from edn_jax.data import build, dataset
from edn_jax.errors import EdnError
from edn_jax.models import checkpoints
from edn_jax.pose import normalization, render
from edn_jax.runtime import storage
from edn_jax.transfer.sources import stats_in_frame


@dataclasses.dataclass(frozen=True)
class Target:
    """The trained target: its model, its pose statistics in the model's frame, and (for
    ``transfer.normalization = "paper"``, which needs them) its training poses in that frame."""

    model: checkpoints.TrainedModel
    stats: normalization.PoseStats
    dataset_dir: str
    poses: np.ndarray | None = None
    exemplars: exemplar.ExemplarBank | None = None  # the training frames, for a model with model.exemplar

    @property
    def height(self) -> int:
        return self.model.stage.height

    @property
    def width(self) -> int:
        return self.model.stage.width


def load_target(config, explicit=()) -> Target:
    """The trained model in ``transfer.model_workdir`` (rebuilt from its training record; ``explicit``:
    the fields the user set, which must agree with it) and its target's pose statistics at its frame size."""
    workdir = config.transfer.model_workdir
    if not workdir:
        raise EdnError("transfer.model_workdir is empty",
                       "pass --config.transfer.model_workdir=<the --workdir the target was trained in>")
    if not storage.isdir(workdir):
        raise EdnError(f"transfer.model_workdir {workdir} does not exist", "pass the --workdir of a training run")
    model = checkpoints.load_trained_model(config, workdir, explicit=explicit)
    directory = build.model_dataset_dir(config, workdir, model.dataset_dir)
    model = checkpoints.with_plate(model, directory)
    split = dataset.open_split(directory, "train")
    size = (int(split.metadata.get("height", model.stage.height)), int(split.metadata.get("width", model.stage.width)))
    tf = render.fit_transform(size, (model.stage.height, model.stage.width), "pad")
    poses = None
    if config.transfer.normalize and config.transfer.normalization == "paper":
        poses = dataset.split_keypoints(split, model.stage.height, model.stage.width)
    bank = None
    if model.renderer.uses_exemplar:
        plate = model.params.get("background")  # with_plate's, so the bank need not decode the split again
        bank = exemplar.ExemplarBank(split, model.stage.height, model.stage.width,
                                     plate=None if plate is None else background.from_unit(plate),
                                     warp=model.renderer.model.exemplar_warp,
                                     plate_fill=model.renderer.model.plate_fill)
    stats = stats_in_frame(split.stats, tf)
    if not normalization.has_travel_range(stats):  # a dataset built before the travel range was stored
        stats = normalization.pose_statistics(dataset.split_keypoints(split, model.stage.height, model.stage.width))
    return Target(model, stats, directory, poses, bank)
