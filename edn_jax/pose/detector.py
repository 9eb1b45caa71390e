"""Pose detector backends behind one interface.

A detector maps one RGB frame to at most one person in the canonical layout
(``layout.py``). Several people are handled a level up, in ``tracking.py``,
which calls a detector on crops and masked frames. Backends:

* ``MediaPipeHolisticDetector``: MediaPipe Holistic with the models bundled in
  the mediapipe 0.10.21 wheel (``model_complexity=1``, refined face mesh), so it
  runs offline.
* OpenPose output is read from JSON by ``openpose_json.py`` instead of detected.
* The synthetic subject carries its exact keypoints (``synthetic.py``).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout

B = layout.B

# MediaPipe Pose (33 landmarks) index of each BODY_25 point that exists there.
_MP_POSE_TO_BODY25 = {
    "Nose": 0, "RShoulder": 12, "RElbow": 14, "RWrist": 16, "LShoulder": 11,
    "LElbow": 13, "LWrist": 15, "RHip": 24, "RKnee": 26, "RAnkle": 28,
    "LHip": 23, "LKnee": 25, "LAnkle": 27, "REye": 5, "LEye": 2, "REar": 8,
    "LEar": 7, "LBigToe": 31, "LHeel": 29, "RBigToe": 32, "RHeel": 30,
}
# Face-mesh vertex for each of the 68 iBUG points, following the mesh's
# contours: jaw (subject's right to left), brows outer->inner / inner->outer,
# nose bridge and base, eyes from the outer (right) / inner (left) corner
# clockwise, outer then inner lips from the right corner.
_MESH_TO_IBUG68 = (
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144,
    362, 385, 387, 263, 373, 380,
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    78, 82, 13, 312, 308, 317, 14, 87,
)
_MESH_RIGHT_IRIS, _MESH_LEFT_IRIS = 468, 473  # iris centres of the refined mesh
# Where a small toe sits along the heel -> big-toe line (MediaPipe has no small toe).
_SMALL_TOE_ALONG_FOOT = 0.8
# Face and hand landmarks carry no per-point score; a detected one gets this.
LANDMARK_CONFIDENCE = 1.0


def mediapipe_to_canonical(pose: np.ndarray | None, face: np.ndarray | None,
                           left_hand: np.ndarray | None, right_hand: np.ndarray | None,
                           width: int, height: int, min_visibility: float = 0.0) -> np.ndarray | None:
    """Maps MediaPipe Holistic landmarks onto the canonical layout, in pixels.

    ``pose`` is [33, 3] (x, y normalised to [0, 1], visibility); ``face`` is
    [468 or 478, 2+] normalised; hands are [21, 2+] normalised, MediaPipe's
    order equals OpenPose's. Neck and mid-hip are midpoints of the shoulders and
    hips, small toes lie on the heel-toe line; derived points take the minimum
    confidence of their sources. Returns None when no body was found.
    """
    if pose is None:
        return None
    kps = layout.empty_pose()
    scale = np.array([width, height], np.float32)
    pose = np.asarray(pose, np.float32)
    for name, mp_index in _MP_POSE_TO_BODY25.items():
        kps[B[name], :2] = pose[mp_index, :2] * scale
        kps[B[name], 2] = pose[mp_index, 2]

    def derive(target: str, a: str, b: str, t: float = 0.5) -> None:
        kps[B[target], :2] = (1 - t) * kps[B[a], :2] + t * kps[B[b], :2]
        kps[B[target], 2] = min(kps[B[a], 2], kps[B[b], 2])

    derive("Neck", "RShoulder", "LShoulder")
    derive("MidHip", "RHip", "LHip")
    derive("LSmallToe", "LHeel", "LBigToe", _SMALL_TOE_ALONG_FOOT)
    derive("RSmallToe", "RHeel", "RBigToe", _SMALL_TOE_ALONG_FOOT)
    kps[layout.BODY][kps[layout.BODY, 2] <= min_visibility] = 0.0

    if face is not None:
        face = np.asarray(face, np.float32)[:, :2] * scale
        block = kps[layout.FACE]
        block[:68, :2] = face[list(_MESH_TO_IBUG68)]
        if len(face) > _MESH_LEFT_IRIS:
            block[layout.FACE_RIGHT_PUPIL, :2] = face[_MESH_RIGHT_IRIS]
            block[layout.FACE_LEFT_PUPIL, :2] = face[_MESH_LEFT_IRIS]
        else:  # unrefined mesh: the eye contour's centre
            block[layout.FACE_RIGHT_PUPIL, :2] = block[list(layout.FACE_RIGHT_EYE), :2].mean(0)
            block[layout.FACE_LEFT_PUPIL, :2] = block[list(layout.FACE_LEFT_EYE), :2].mean(0)
        block[:, 2] = LANDMARK_CONFIDENCE
    for hand, part in ((left_hand, layout.LEFT_HAND), (right_hand, layout.RIGHT_HAND)):
        if hand is not None:
            kps[part, :2] = np.asarray(hand, np.float32)[:, :2] * scale
            kps[part, 2] = LANDMARK_CONFIDENCE
    return kps


class PoseDetector(Protocol):
    """Finds at most one person in an RGB frame."""

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        """[137, 3] keypoints in pixels of ``frame``, or None if nobody is found."""

    def close(self) -> None:
        ...


def _landmarks(landmark_list, with_visibility: bool = False) -> np.ndarray | None:
    if landmark_list is None:
        return None
    if with_visibility:
        return np.array([(p.x, p.y, p.visibility) for p in landmark_list.landmark], np.float32)
    return np.array([(p.x, p.y) for p in landmark_list.landmark], np.float32)


class MediaPipeHolisticDetector:
    """MediaPipe Holistic on each frame independently (static mode).

    Static mode is used because the tracker feeds crops whose window moves from
    frame to frame; MediaPipe's own ROI tracking would assume a fixed image. Static
    mode still re-detects the body on every call, but the hand and face subgraphs keep
    their previous regions (see ``reset``).
    """

    def __init__(self, min_detection_confidence: float = 0.5, refine_face: bool = True,
                 min_visibility: float = 0.0):
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - install problem
            raise EdnError(f"mediapipe is not importable ({e})", "run ./launch.sh setup to install the pinned requirements")
        self._min_visibility = min_visibility
        # model_complexity=1 is the only pose model bundled in the wheel; 0 and 2 download at run time.
        self._holistic = mp.solutions.holistic.Holistic(
            static_image_mode=True, model_complexity=1, refine_face_landmarks=refine_face,
            min_detection_confidence=min_detection_confidence)

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        results = self._holistic.process(frame)
        height, width = frame.shape[:2]
        return mediapipe_to_canonical(
            _landmarks(results.pose_landmarks, with_visibility=True), _landmarks(results.face_landmarks),
            _landmarks(results.left_hand_landmarks), _landmarks(results.right_hand_landmarks),
            width, height, self._min_visibility)

    def reset(self) -> None:
        """Forgets the previous call. Even in static mode Holistic reuses the previous call's hand
        and face regions when they overlap the new ones, so a detector's results depend on what it
        saw before; after a reset it behaves like a new one."""
        self._holistic.reset()

    def close(self) -> None:
        self._holistic.close()

    def __enter__(self) -> "MediaPipeHolisticDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def from_config(pose_cfg) -> MediaPipeHolisticDetector:
    """A Holistic detector with the pose section's thresholds (``config.pose``)."""
    return MediaPipeHolisticDetector(min_detection_confidence=pose_cfg.min_detection_confidence,
                                     min_visibility=pose_cfg.min_visibility)


def detect_upscaled(detector, frame: np.ndarray, min_side: int) -> np.ndarray:
    """Keypoints of ``frame`` in its pixels (an empty pose when nobody is found), detected on a copy
    upscaled so its shorter side is at least ``min_side``: MediaPipe misses people in frames of a
    few dozen pixels. For scoring generated frames, which come at the model's size."""
    scale = max(1.0, min_side / min(frame.shape[:2]))
    big = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    kps = detector.detect(big)
    if kps is None:
        return layout.empty_pose()
    kps = kps.copy()
    kps[:, :2] /= scale
    return kps
