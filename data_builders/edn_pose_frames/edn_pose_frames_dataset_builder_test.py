"""TFDS harness test of edn_pose_frames on a short generated video in the manual directory."""

import tempfile

from data_builders import harness
from data_builders.edn_pose_frames import edn_pose_frames_dataset_builder as builder_module
from edn_jax import synthetic
from edn_jax.runtime import video


class EdnPoseFramesTest(harness.PoseFramesBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [builder_module.PoseFramesConfig(name="test", height=128, width=128)]
    SPLITS = {"train": 16, "validation": 4}
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # OpenCV and ffmpeg read the video

    @classmethod
    def setUpClass(cls):
        # The manual directory holds one target video: 20 frames of the synthetic subject, which the
        # detector finds like a real person (no binary test data in the repository).
        cls._manual_dir = tempfile.TemporaryDirectory()
        clip = synthetic.synthetic_clip(seed=3, num_frames=20, height=256, width=256)
        video.write_video(f"{cls._manual_dir.name}/target.mp4", clip.frames, clip.fps)
        cls.EXAMPLE_DIR = cls._manual_dir.name
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._manual_dir.cleanup()
