"""The subject tracker on scripted multi-person scenes with known identities, and the detector on
people turned upside down or sideways.

``scenes``: each scene of ``edn_jax.synthetic.scenes`` (a subject displaced far in one frame, one
who leaves while someone else crosses and comes back elsewhere, two people crossing, a second
person standing behind the subject, a subject flipping into the shade while someone walks by) is
tracked with MediaPipe and the default tracker, once with the identity rules (clothes colours by
region) and once with them off
(``pose.max_appearance_distance=1.0``: position only, as the tracker was before them). For each:
frames with the subject over frames it is visible on, swaps (a skeleton or face that is not the
subject's), frames with a hand on another person, the per-frame statuses and frames/s.

``rotations``: how often MediaPipe finds the synthetic subject in a frame turned by each angle,
and the median body-point error where it does, upright and on the window turned back by the
nearest quarter (what ``pose.rotated_tries`` does when nobody is found upright).

Prints one JSON object. Run from the repository root:

  .venv/bin/python -m benchmarks.tracking_scenes
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_SCENES = flags.DEFINE_list("scenes", ["jump", "leave_and_return", "crossing", "behind", "flip_in_shade"],
                            "Scenes to track.")
_ANGLES = flags.DEFINE_list("angles", [str(a) for a in range(0, 360, 30)], "Rotations (degrees) to detect at.")
_FRAMES = flags.DEFINE_integer("rotation_frames", 8, "Synthetic frames per angle.")


def _scenes(detector_cls) -> dict:
    from edn_jax.pose import tracking, video_tracker
    from edn_jax.synthetic import scenes

    out = {}
    for name in _SCENES.value:
        scene = scenes.scene(name)
        frames = list(scene.frames())
        entry = {"frames": scene.num_frames,
                 "frames_subject_visible": int(sum(scene.subject_visible(t) for t in range(scene.num_frames)))}
        for label, distance in (("identity", tracking.TrackerConfig.max_appearance_distance), ("position_only", 1.0)):
            cfg = tracking.TrackerConfig(subject="point", subject_point=scene.subject_point,
                                         max_appearance_distance=distance)
            with detector_cls() as det:
                t0 = time.perf_counter()
                kps, stats = video_tracker.track_video(det, frames, cfg)
                seconds = time.perf_counter() - t0
            score = scenes.score_track(scene, kps)
            entry[label] = {"coverage": round(score.coverage, 3), "swaps": len(score.swaps),
                            "swap_frames": [t for t, _ in score.swaps], "hand_mix_frames": score.hand_mixes,
                            "frame_status": stats.status_counts(), "reacquired": stats.reacquired,
                            "parts_dropped": stats.parts_dropped, "frames_per_s": round(scene.num_frames / seconds, 1)}
        out[name] = entry
    return out


def _rotations(detector_cls) -> dict:
    from edn_jax import synthetic
    from edn_jax.pose import layout, people

    size = 384
    clip = synthetic.synthetic_clip(seed=0, num_frames=_FRAMES.value, height=size, width=size)
    whole = np.array([0, 0, size, size], np.float32)
    out = {}
    with detector_cls() as det:
        for angle in (int(a) for a in _ANGLES.value):
            m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
            found, errors, found_turned, errors_turned = 0, [], 0, []
            for frame, exact in zip(clip.frames, clip.keypoints):
                image = cv2.warpAffine(frame, m, (size, size), borderMode=cv2.BORDER_REFLECT_101)
                truth = exact[layout.BODY, :2] @ m[:, :2].T + m[:, 2]
                for kps, hits, errs in ((det.detect(image), "upright", errors),
                                        (people.detect_rotated(det, image, whole, (-round(angle / 90)) % 4), "turned",
                                         errors_turned)):
                    if kps is None:
                        continue
                    seen = kps[layout.BODY, 2] > 0.3
                    errs.append(float(np.median(np.linalg.norm(kps[layout.BODY][seen, :2] - truth[seen], axis=1))))
                    if hits == "upright":
                        found += 1
                    else:
                        found_turned += 1
            out[str(angle)] = {"found": found, "median_error_px": round(float(np.median(errors)), 1) if errors else None,
                               "found_turned_back": found_turned,
                               "median_error_px_turned_back": round(float(np.median(errors_turned)), 1)
                               if errors_turned else None}
    return {"frames_per_angle": _FRAMES.value, "frame_size": size, "angles": out}


def main(argv) -> None:
    del argv
    from edn_jax.pose import detector

    print(json.dumps({"benchmark": "tracking_scenes", "scenes": _scenes(detector.MediaPipeHolisticDetector),
                      "rotations": _rotations(detector.MediaPipeHolisticDetector)}, indent=2))


if __name__ == "__main__":
    app.run(main)
