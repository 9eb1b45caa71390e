"""A workdir's layout: the name of every directory and file a run writes, in one place.

  <workdir>/
    keypoints.npz, openpose_json/,       pose mode (dance mode: under pose/)
    stick.mp4, overlay.mp4, pose_summary.json
    tfds/                                the dataset built for training (build.data_dir elsewhere)
    checkpoints/<stage>/<step>/          Orbax, per stage
    tensorboard/<stage>/                 training's metrics; evaluate_<stage>/, ablation_<row>/
    samples/<stage>/step_<step>.png      sample grids while training
    holdout_samples_<stage>.png, background_<stage>.png, background_<stage>_filled.png
    train_summary.json                   what training did (and the dataset it used)
    evaluation/<stage>/                  metrics.json, per_frame.csv, per_frame.png, samples.png, side_by_side.mp4
    <source>.mp4, transfer_summary.json  transfer mode (dance mode: under videos/)
    .transfer_partial/                   an interrupted transfer's state, removed when it completes
    dance/state.json                     dance mode's phases
    report/index.html, report/runs.json  the results page and the runs listed on it
"""

import posixpath

KEYPOINTS = "keypoints.npz"
OPENPOSE_JSON = "openpose_json"
STICK_VIDEO = "stick.mp4"
OVERLAY_VIDEO = "overlay.mp4"
POSE_SUMMARY = "pose_summary.json"
POSE = "pose"
TFDS = "tfds"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
SAMPLES = "samples"
TRAIN_SUMMARY = "train_summary.json"
EVALUATION = "evaluation"
METRICS = "metrics.json"
PER_FRAME_CSV = "per_frame.csv"
PER_FRAME_PLOT = "per_frame.png"
EVALUATION_SAMPLES = "samples.png"
EVALUATION_VIDEO = "side_by_side.mp4"
TRANSFER_SUMMARY = "transfer_summary.json"
TRANSFER_PARTIAL = ".transfer_partial"
VIDEOS = "videos"
DANCE_STATE = posixpath.join("dance", "state.json")
REPORT = "report"
PAGE = "index.html"
RUNS = "runs.json"


SAMPLE_GRIDS = "step_*.png"  # every name sample_grid gives


def sample_grid(step: int) -> str:
    """A training sample grid's name in ``samples/<stage>/``."""
    return f"step_{step:08d}.png"


def transfer_summary(process: int, processes: int) -> str:
    """The transfer summary's name; in a run of several processes, each writes its own."""
    return TRANSFER_SUMMARY if processes == 1 else f"transfer_summary.process{process}.json"


def holdout_samples(stage: str) -> str:
    return f"holdout_samples_{stage}.png"


def background(stage: str, filled: bool = False) -> str:
    """The background plate of a stage's model (``filled``: with the pixels it filled marked)."""
    return f"background_{stage}{'_filled' if filled else ''}.png"
