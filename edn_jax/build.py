"""Build mode: a TFDS pose-frame dataset from videos (or the synthetic subject).

A dataset that already exists is never replaced silently: the build refuses, or
with ``--config.overwrite=True`` moves the old one aside (renamed with a
timestamp) before building, so nothing is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from edn_jax.errors import EdnError


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise EdnError(f"{what} is empty", f"give at least one value for {what}")
    return items


def make_builder(config, workdir: str, size: tuple[int, int] | None = None):
    """The TFDS builder for the configured inputs (a video list or the synthetic subject), at ``size`` or build.height/width."""
    from data_builders.edn_pose_frames import edn_pose_frames_dataset_builder as real
    from data_builders.edn_synthetic import edn_synthetic_dataset_builder as synth
    from edn_jax import dataset, video
    from edn_jax.pose import pipeline

    b = config.build
    data_dir = b.data_dir or os.path.join(workdir, "tfds")
    pipeline.validate_pose_config(config)
    pose = tuple(sorted(config.pose.items()))
    height, width = size or (b.height, b.width)
    common = dict(height=height, width=width, val_fraction=b.val_fraction, image_format=b.image_format,
                  pose=pose, max_frames=config.input.max_frames)
    if config.input.video:
        videos = tuple(_parse_list(config.input.video, "input.video"))
        for path in videos:
            video.probe_video(path)  # fail fast, before any slow work, on a missing or unreadable file
        stem = "+".join(os.path.splitext(os.path.basename(v))[0] for v in videos)
        name = b.name or f"{stem}_{height}x{width}"
        cls, cfg = real.Builder, dataset.PoseFramesConfig(name=_safe(name), videos=videos, **common)
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
    if os.path.exists(os.path.join(target, "dataset_info.json")):
        if not config.overwrite:
            raise EdnError(f"a dataset is already built at {target}",
                           "choose another --config.build.name, or pass --config.overwrite=True to move it aside")
        aside = f"{target}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(target, aside)
        print(f"moved the existing dataset to {aside}")
        builder = make_builder(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    builder.download_and_prepare()
    return target
