"""A rendered video checked the way the paper's pose metric checks a model (``transfer.self_score``)."""

from __future__ import annotations

import numpy as np

from edn_jax import metrics
from edn_jax.evaluate import pose_scores
from edn_jax.pose import detector as pose_detector


class SelfScore:
    """A rendered video checked the way the paper's pose metric checks a model: the detector on
    each output frame against the (normalized) pose it was asked to draw, and the frame change
    of the output next to the source video's. One detector per video, so no video's frames
    colour another's detections."""

    def __init__(self, detector, min_side: int, height: int):
        self.detector, self.min_side, self.height = detector, min_side, height
        self.detected: list[np.ndarray] = []
        self.change = {"output": [], "source": []}
        self._last: dict[str, np.ndarray] = {}

    def add(self, outputs: np.ndarray, sources: np.ndarray | None) -> None:
        """Consecutive output frames [n, H, W, 3] (uint8, model frame) and the source frames they came
        from (the same size), if any."""
        self.detected.extend(pose_detector.detect_upscaled(self.detector, frame, self.min_side) for frame in outputs)
        for name, frames in (("output", outputs), ("source", sources)):
            if frames is None:
                continue
            run = frames if name not in self._last else np.concatenate([self._last[name], frames])
            self.change[name].extend(np.asarray(metrics.frame_jitter(run)).tolist())
            self._last[name] = frames[-1:]

    def summary(self, drawn: np.ndarray) -> dict:
        """Pose distance of the detections to ``drawn`` [T, 137, 3] (edn_jax's and the paper's, with
        missed detections) and frame jitter in 8-bit levels per frame (the source's: None without frames)."""
        return pose_scores(np.stack(self.detected), drawn, self.height) | {"frame_jitter": {
            name: (float(np.mean(v)) if v else None) for name, v in self.change.items()}}

    def state(self) -> dict[str, np.ndarray]:
        """What ``restore`` needs to go on after an interruption (arrays, for an .npz)."""
        out = {"detected": np.stack(self.detected) if self.detected else np.zeros((0, 0, 3), np.float32)}
        for name in ("output", "source"):
            out[f"change_{name}"] = np.asarray(self.change[name], np.float64)
            if name in self._last:
                out[f"last_{name}"] = self._last[name]
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.detected = list(state["detected"]) if state["detected"].size else []
        for name in ("output", "source"):
            self.change[name] = state[f"change_{name}"].tolist()
            if f"last_{name}" in state:
                self._last[name] = state[f"last_{name}"]

    def close(self) -> None:
        self.detector.close()
