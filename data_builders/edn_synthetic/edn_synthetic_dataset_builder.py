"""edn_synthetic: the built-in synthetic subject, with its exact keypoints.

Same features and splits as edn_pose_frames, so everything downstream (training,
evaluation, transfer) runs on it without a camera or a detector. One video per seed.
"""

from edn_jax.data import dataset

PoseFramesConfig = dataset.PoseFramesConfig


class Builder(dataset.PoseFramesBuilder):
    """Renders the synthetic subject; keypoints are exact, so nothing is detected or smoothed."""

    BUILDER_CONFIGS = [PoseFramesConfig(name="default", description="seed 0, 120 frames at 256x256")]

    def _videos(self, dl_manager) -> list[dataset.VideoPoses]:
        cfg = self.builder_config
        return [dataset.synthetic_video(seed, cfg.synthetic_frames, cfg.height, cfg.width, cfg.synthetic_fps)
                for seed in cfg.synthetic_seeds]
