"""Pose extraction from a real video: keypoints (.npz + OpenPose JSON), stick-figure and overlay videos.

  python -m edn_jax.main --config configs/pose_video.py --workdir runs/pose_cam01 \
      --config.input.video=../shared/data/single_person_cam01.mp4
  # two people in frame: follow the most central one instead of the largest
  python -m edn_jax.main --config configs/pose_video.py --workdir runs/pose_two \
      --config.input.video=../shared/data/two_people_cam01.mp4 --config.pose.subject=central
"""

from configs import default


def get_config():
    config = default.get_config()
    config.mode = "pose"
    config.input.video = "../shared/data/single_person_cam01.mp4"
    return config
