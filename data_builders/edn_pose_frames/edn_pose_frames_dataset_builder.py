"""edn_pose_frames: a target person's frames with canonical keypoints, from one or more videos.

Built by edn_jax's build mode (``--config.mode=build``), or directly:

  builder = Builder(data_dir=DIR, config=PoseFramesConfig(name="cam01_256", videos=("cam01.mp4",)))
  builder.download_and_prepare()

With no ``videos`` in the config, every video in the manual directory
(``download_config.manual_dir``) is used.
"""

import tensorflow_datasets as tfds

from edn_jax.data import dataset

PoseFramesConfig = dataset.PoseFramesConfig


class Builder(dataset.PoseFramesBuilder):
    """Runs the pose pipeline on each target video and stores frames in frame order."""

    BUILDER_CONFIGS = [PoseFramesConfig(name="default", description="videos from manual_dir at 256x256")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the target person's videos (.mp4 etc.) in the manual directory."

    def _videos(self, dl_manager: tfds.download.DownloadManager) -> list[dataset.VideoPoses]:
        cfg = self.builder_config
        paths = list(cfg.videos) or dataset.find_videos(str(dl_manager.manual_dir))
        keypoints = list(cfg.keypoints) or [""] * len(paths)
        return [dataset.detect_video(p, cfg.pose, cfg.max_frames, k) for p, k in zip(paths, keypoints)]
