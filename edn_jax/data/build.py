"""Build mode: a TFDS pose-frame dataset from videos (or the synthetic subject); the datasets of
training runs (built on first use) and of trained models.

A dataset that already exists is never replaced silently: the build refuses, or
with ``--config.overwrite=True`` moves the old one aside (renamed with a
timestamp) before building, so nothing is lost.
"""

from __future__ import annotations

import json
import os
import re
import time

import jax
from jax.experimental import multihost_utils

from data_builders.edn_pose_frames import edn_pose_frames_dataset_builder as real
from data_builders.edn_synthetic import edn_synthetic_dataset_builder as synth
from edn_jax import filenames
from edn_jax.data import dataset
from edn_jax.errors import EdnError
from edn_jax.pose import pipeline
from edn_jax.runtime import storage, video, workdir_lock
from edn_jax.stages import plan_stages


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise EdnError(f"{what} is empty", f"give at least one value for {what}")
    return items


def make_builder(config, workdir: str, size: tuple[int, int] | None = None):
    """The TFDS builder for the configured inputs (a video list or the synthetic subject), at ``size`` or build.height/width."""
    b = config.build
    data_dir = b.data_dir or os.path.join(workdir, filenames.TFDS)
    pipeline.validate_pose_config(config)
    pose = tuple(sorted(config.pose.items()))
    height, width = size or (b.height, b.width)
    common = dict(height=height, width=width, val_fraction=b.val_fraction, image_format=b.image_format,
                  pose=pose, max_frames=config.input.max_frames)
    if config.input.video:
        videos = tuple(_parse_list(config.input.video, "input.video"))
        for path in videos:
            video.probe_video(path)  # fail fast, before any slow work, on a missing or unreadable file
        keypoints = tuple(_parse_list(b.keypoints, "build.keypoints")) if b.keypoints else ()
        if keypoints and len(keypoints) != len(videos):
            raise EdnError(f"build.keypoints names {len(keypoints)} files for {len(videos)} videos",
                           "give one pose-mode keypoints.npz per video of input.video, in its order, or none")
        stem = "+".join(os.path.splitext(os.path.basename(v))[0] for v in videos)
        name = b.name or f"{stem}_{height}x{width}"
        cls, cfg = real.Builder, dataset.PoseFramesConfig(name=_safe(name), videos=videos, keypoints=keypoints,
                                                          **common)
    else:
        try:
            seeds = tuple(int(s) for s in _parse_list(b.synthetic_seeds, "build.synthetic_seeds"))
        except ValueError:
            raise EdnError(f"build.synthetic_seeds={b.synthetic_seeds!r} is not a list of integers", "use e.g. 0,1")
        name = b.name or f"seeds{'-'.join(map(str, seeds))}_{config.synthetic.num_frames}f_{height}x{width}"
        cls, cfg = synth.Builder, dataset.PoseFramesConfig(
            name=_safe(name), synthetic_seeds=seeds, synthetic_frames=config.synthetic.num_frames,
            synthetic_fps=config.synthetic.fps, **common)
    cfg.validate()
    return cls(data_dir=data_dir, config=cfg)


def _safe(name: str) -> str:
    """TFDS config names: letters, digits, '_', '-', '.' only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_build_mode(config, workdir: str) -> str:
    """Builds the configured dataset and returns its directory."""
    builder = make_builder(config, workdir)
    target = str(builder.data_dir)
    with workdir_lock.build_lock(target):  # another run building the same directory finishes first
        if storage.exists(storage.join(target, "dataset_info.json")):
            if not config.overwrite:
                raise EdnError(f"a dataset is already built at {target}",
                               "choose another --config.build.name, or pass --config.overwrite=True to move it aside")
            aside = f"{target}.old-{time.strftime('%Y%m%d-%H%M%S')}"
            storage.move(target, aside)
            print(f"moved the existing dataset to {aside}")
            builder = make_builder(config, workdir)
        storage.makedirs(workdir)
        builder.download_and_prepare()
    return target


def training_builder(config, workdir: str):
    """The TFDS builder of the dataset training builds into ``workdir`` when ``data.dataset_dir`` is
    empty: the configured inputs at the largest stage's frame size."""
    last = plan_stages(config)[-1]
    return make_builder(config, workdir, size=(last.height, last.width))


def open_training_data(config, workdir: str):
    """(the training split, its directory): ``data.dataset_dir`` if set, else built into the workdir
    on first use at the largest stage's frame size (smaller stages resize its frames)."""
    directory = config.data.dataset_dir
    if not directory:
        builder = training_builder(config, workdir)
        directory = str(builder.data_dir)
        if jax.process_index() == 0 and not storage.exists(storage.join(directory, "dataset_info.json")):
            with workdir_lock.build_lock(directory):  # a run with another workdir may be building it now
                if not storage.exists(storage.join(directory, "dataset_info.json")):
                    print(f"building the training dataset at {directory}")
                    builder.download_and_prepare()
        if jax.process_count() > 1:  # the others wait for process 0's build (the workdir must be shared)
            multihost_utils.sync_global_devices("edn_jax: training dataset built")
            if not storage.exists(storage.join(directory, "dataset_info.json")):
                raise EdnError(f"process {jax.process_index()} cannot see the dataset process 0 built at {directory}",
                               "put --workdir on storage every host sees (a gs:// bucket, or one mount at the "
                               "same path), or set data.dataset_dir")
    return dataset.open_split(directory, "train"), directory


def model_dataset_dir(config, model_workdir: str, recorded: str = "") -> str:
    """The dataset a trained model learned from: ``data.dataset_dir`` if set, else the one its
    checkpoint recorded, else the one its ``train_summary.json`` names (relative paths tried from
    here and from the model directory), else the one training builds into ``model_workdir``."""
    candidates = [config.data.dataset_dir] if config.data.dataset_dir else []
    if not candidates:
        candidates += [recorded] if recorded else []
        summary = os.path.join(model_workdir, filenames.TRAIN_SUMMARY)
        if storage.isfile(summary):
            try:
                with storage.open(summary) as f:
                    directory = json.load(f).get("dataset", "")
            except (OSError, ValueError) as e:
                raise EdnError(f"cannot read {summary} ({e})", "pass --config.data.dataset_dir=<the training dataset>")
            parts = directory.split(os.sep)
            if directory:
                candidates += [directory] if os.path.isabs(directory) or storage.is_remote(directory) else [
                    directory, os.path.join(model_workdir, directory),
                    *([os.path.join(model_workdir, *parts[parts.index("tfds"):])] if "tfds" in parts else [])]
        candidates.append(str(training_builder(config, model_workdir).data_dir))
    for directory in candidates:
        if directory and storage.isfile(storage.join(directory, "dataset_info.json")):
            return directory
    raise EdnError(f"no built dataset found for the model in {storage.absolute(model_workdir)} "
                   f"(looked in: {', '.join(c for c in candidates if c) or 'nowhere'})",
                   "set --config.data.dataset_dir to the dataset the model was trained on")
