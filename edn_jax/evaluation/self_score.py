"""A rendered video checked the way the paper's pose metric checks a model (``transfer.self_score``)."""

from __future__ import annotations

import cv2
import numpy as np

from edn_jax.evaluation import metrics
from edn_jax.evaluation.evaluate import fmt, missed_text
from edn_jax.evaluation.held_out import pose_scores
from edn_jax.pose import layout
from edn_jax.pose import detector as pose_detector

ASKED_MARGIN = 0.06  # the asked figure's region: the figure dilated by this fraction of the frame height
MIN_BODY_POINTS = 3  # a detection with fewer body points than this is not a body
GREY = 127           # what the asked region's box is painted with before looking for anyone else


def asked_region(label: np.ndarray) -> np.ndarray:
    """Where the person asked for may be: the stick figure ``label`` uint8 [H, W, 3] dilated by
    ``ASKED_MARGIN`` of the frame height, bool [H, W] (all False for an empty figure)."""
    drawn = (label.max(axis=-1) > 0).astype(np.uint8)
    radius = max(1, int(round(ASKED_MARGIN * label.shape[0])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(drawn, kernel) > 0


def body_points(pose: np.ndarray, conf_threshold: float = 0.05) -> np.ndarray:
    """The present body points of a detection [137, 3] as [n, 2]."""
    body = pose[layout.BODY]
    return body[body[:, 2] > conf_threshold, :2]


def people_counts(found: np.ndarray, second: np.ndarray, has_figure: np.ndarray) -> dict:
    """Frame counts and rates of the people check: ``asked_body_found_rate`` over the frames with a
    figure, ``second_person_rate`` over all frames (None where there is no frame to count)."""
    frames, with_figure = int(len(second)), int(has_figure.sum())
    found_n, second_n = int((found & has_figure).sum()), int(second.sum())
    return {"frames": frames, "frames_with_figure": with_figure, "asked_body_found": found_n,
            "second_person_frames": second_n,
            "asked_body_found_rate": found_n / with_figure if with_figure else None,
            "second_person_rate": second_n / frames if frames else None}


class SelfScore:
    """A rendered video checked the way the paper's pose metric checks a model: the detector on
    each output frame against the (normalized) pose it was asked to draw, and the frame change
    of the output next to the source video's. It also counts people: whether the body asked for is
    found at its figure (most of the detection's body points inside ``asked_region``), and whether
    anybody is found with that region's box painted grey (a second person, or a body drawn where the
    figure asks for none; the box rather than the region's outline, which MediaPipe itself sometimes
    takes for a person on small frames). One detector per video and check, so no frame colours another's detections."""

    def __init__(self, detector, min_side: int, height: int, masked_detector=None):
        self.detector, self.min_side, self.height = detector, min_side, height
        self.masked_detector = masked_detector
        self.detected: list[np.ndarray] = []
        self.people = {"found": [], "second": [], "has_figure": []}
        self.change = {"output": [], "source": []}
        self._last: dict[str, np.ndarray] = {}

    @classmethod
    def from_config(cls, config, height: int) -> "SelfScore":
        t = config.transfer
        return cls(pose_detector.from_config(config.pose), t.detect_min_side, height,
                   pose_detector.from_config(config.pose))

    def add(self, outputs: np.ndarray, sources: np.ndarray | None, labels: np.ndarray | None = None) -> None:
        """Consecutive output frames [n, H, W, 3] (uint8, model frame), the source frames they came
        from (the same size), if any, and the stick figures they were asked to draw (for the people check)."""
        for i, frame in enumerate(outputs):
            pose = pose_detector.detect_upscaled(self.detector, frame, self.min_side)
            self.detected.append(pose)
            if labels is None or self.masked_detector is None:
                continue
            region = asked_region(labels[i])
            points = body_points(pose)
            inside = region[np.clip(np.round(points[:, 1]).astype(int), 0, region.shape[0] - 1),
                            np.clip(np.round(points[:, 0]).astype(int), 0, region.shape[1] - 1)]
            masked = frame.copy()  # the region's box, not its outline: a grey person-shaped patch can pass for one
            if region.any():
                ys, xs = np.nonzero(region)
                masked[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = GREY
            others = body_points(pose_detector.detect_upscaled(self.masked_detector, masked, self.min_side))
            self.people["found"].append(len(points) >= MIN_BODY_POINTS and inside.mean() >= 0.5)
            self.people["second"].append(len(others) >= MIN_BODY_POINTS)
            self.people["has_figure"].append(bool(region.any()))
        for name, frames in (("output", outputs), ("source", sources)):
            if frames is None:
                continue
            run = frames if name not in self._last else np.concatenate([self._last[name], frames])
            self.change[name].extend(np.asarray(metrics.frame_jitter(run)).tolist())
            self._last[name] = frames[-1:]

    def people_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, second, has_figure) bool [frames checked] for pooling over videos."""
        return tuple(np.asarray(self.people[k], bool) for k in ("found", "second", "has_figure"))

    def summary(self, drawn: np.ndarray) -> dict:
        """Pose distance of the detections to ``drawn`` [T, 137, 3] (edn_jax's and the paper's, with
        missed detections), frame jitter in 8-bit levels per frame (the source's: None without frames)
        and, when figures were given, the people check (``people_counts``)."""
        out = pose_scores(np.stack(self.detected), drawn, self.height) | {"frame_jitter": {
            name: (float(np.mean(v)) if v else None) for name, v in self.change.items()}}
        if self.people["second"]:
            out["people"] = people_counts(*self.people_arrays())
        return out

    def state(self) -> dict[str, np.ndarray]:
        """What ``restore`` needs to go on after an interruption (arrays, for an .npz)."""
        out = {"detected": np.stack(self.detected) if self.detected else np.zeros((0, 0, 3), np.float32)}
        for name in ("output", "source"):
            out[f"change_{name}"] = np.asarray(self.change[name], np.float64)
            if name in self._last:
                out[f"last_{name}"] = self._last[name]
        for name, values in self.people.items():
            out[f"people_{name}"] = np.asarray(values, bool)
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.detected = list(state["detected"]) if state["detected"].size else []
        for name in ("output", "source"):
            self.change[name] = state[f"change_{name}"].tolist()
            if f"last_{name}" in state:
                self._last[name] = state[f"last_{name}"]
        for name in self.people:
            self.people[name] = state[f"people_{name}"].tolist() if f"people_{name}" in state else []

    def close(self) -> None:
        self.detector.close()
        if self.masked_detector is not None:
            self.masked_detector.close()


def _percent(rate) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}%"


def score_text(score: dict) -> str:
    """'pose distance 3.10 px (8% missed), asked body found in 97% of figured frames, a second person
    in 0% of frames, frame jitter 1.20 (source 1.40)' (jitter only per video)."""
    pose, jitter, people = score["pose"], score.get("frame_jitter"), score.get("people")
    text = f"pose distance {fmt(pose['overall_distance'], 2)} px ({missed_text(pose['overall_missed_rate'])})"
    if people:
        text += (f", asked body found in {_percent(people['asked_body_found_rate'])} of frames with a figure, "
                 f"a second person in {_percent(people['second_person_rate'])} of frames")
    if jitter:
        text += f", frame jitter {fmt(jitter['output'], 2)} (source {fmt(jitter['source'], 2)})"
    return text
