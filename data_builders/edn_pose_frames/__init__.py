"""edn_pose_frames: frames and keypoints of a target person from real videos."""
