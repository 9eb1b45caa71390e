"""OpenPose JSON keypoint files, read and written in OpenPose's own format.

Users who already ran OpenPose skip detection by pointing us at its output, and
other tools (OpenPose viewers, retargeting scripts) read ours. OpenPose writes one
``<name>_<12-digit frame>_keypoints.json`` per frame holding a list of people,
each with flat ``[x, y, c, ...]`` lists per part; the parts map onto the slices of
:mod:`edn_jax.pose.layout`.

Floats are written as Python's repr of the float64 value of each float32, which
parses back to the same float32, so canonical -> JSON -> canonical is bit-exact.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Union

import numpy as np

from edn_jax.errors import EdnError
from edn_jax.pose import layout
from edn_jax.runtime.fileio import atomic_path

PathLike = Union[str, os.PathLike]
Selector = Callable[[list], Union[np.ndarray, None]]

# OpenPose field name -> rows of the canonical array it fills.
FIELDS = {
    "pose_keypoints_2d": layout.BODY,
    "face_keypoints_2d": layout.FACE,
    "hand_left_keypoints_2d": layout.LEFT_HAND,
    "hand_right_keypoints_2d": layout.RIGHT_HAND,
}
_EMPTY_3D_FIELDS = ("pose_keypoints_3d", "face_keypoints_3d",
                    "hand_left_keypoints_3d", "hand_right_keypoints_3d")
VERSION = 1.3
SUFFIX = "_keypoints.json"
_FRAME_NAME = re.compile(r"^(.*)_(\d+)_keypoints\.json$")


def _canonical(pose: np.ndarray) -> np.ndarray:
    """Missing points (confidence not > 0) become exact zeros, as the layout requires."""
    pose = np.array(pose, dtype=np.float32)
    pose[~(pose[:, 2] > 0)] = 0.0
    return pose


def people_to_json_dict(people: list[np.ndarray]) -> dict:
    """OpenPose's per-frame JSON object for ``people`` (each a [137, 3] pose)."""
    out = []
    for i, pose in enumerate(people):
        pose = np.asarray(pose)
        if pose.shape != (layout.NUM_KEYPOINTS, 3):
            raise EdnError(f"person {i} has shape {pose.shape}, expected ({layout.NUM_KEYPOINTS}, 3)",
                           "pass poses in the canonical layout of edn_jax.pose.layout")
        pose = _canonical(pose)
        person = {"person_id": [-1]}
        for field, rows in FIELDS.items():
            person[field] = pose[rows].astype(np.float64).ravel().tolist()
        person.update({field: [] for field in _EMPTY_3D_FIELDS})
        out.append(person)
    return {"version": VERSION, "people": out}


def json_dict_to_people(d: dict, source: str = "keypoint JSON") -> list[np.ndarray]:
    """Canonical [137, 3] float32 poses from an OpenPose JSON object.

    Absent or empty parts (OpenPose run without face or hands) become missing
    points. ``source`` names the file in error messages.
    """
    fix = ("use OpenPose's BODY_25 model (--model_pose BODY_25) with its 70-point face "
           "and 21-point hands, or repair the file")
    if not isinstance(d, dict) or not isinstance(d.get("people"), list):
        raise EdnError(f"{source} has no 'people' list, so it is not OpenPose keypoint JSON", fix)
    people = []
    for i, person in enumerate(d["people"]):
        if not isinstance(person, dict):
            raise EdnError(f"{source}: people[{i}] is not an object", fix)
        pose = layout.empty_pose()
        for field, rows in FIELDS.items():
            values = person.get(field) or []
            expected = 3 * (rows.stop - rows.start)
            if not isinstance(values, list) or len(values) not in (0, expected):
                got = len(values) if isinstance(values, list) else type(values).__name__
                raise EdnError(f"{source}: people[{i}].{field} has {got} values, expected {expected} "
                               f"({expected // 3} points of x, y, confidence) or none", fix)
            if values:
                try:
                    pose[rows] = np.asarray(values, dtype=np.float32).reshape(-1, 3)
                except (TypeError, ValueError):
                    raise EdnError(f"{source}: people[{i}].{field} holds values that are not numbers",
                                   fix) from None
        people.append(_canonical(pose))
    return people


def write_frame_json(path: PathLike, people: list[np.ndarray]) -> None:
    """Write one frame's people atomically, so readers never see a partial file."""
    text = json.dumps(people_to_json_dict(people), allow_nan=False)
    with atomic_path(str(path)) as tmp, open(tmp, "w") as f:
        f.write(text)


def read_frame_json(path: PathLike) -> list[np.ndarray]:
    """The people of one OpenPose JSON file, as canonical [137, 3] float32 poses."""
    path = Path(path)
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise EdnError(f"keypoint file {path} does not exist", "check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdnError(f"keypoint file {path} is not valid JSON ({e})",
                       "re-export it with OpenPose --write_json or delete it") from None
    return json_dict_to_people(d, source=str(path))


def frame_path(dirpath: PathLike, t: int, prefix: str = "frame") -> Path:
    """Where frame ``t`` of a sequence lives, named the way OpenPose names it."""
    return Path(dirpath) / f"{prefix}_{t:012d}{SUFFIX}"


def write_sequence(dirpath: PathLike, keypoints: np.ndarray, prefix: str = "frame") -> None:
    """Write a [T, 137, 3] sequence as one single-person OpenPose file per frame.

    Frames with no present point get zero people, as OpenPose writes them. Stale
    files of this prefix numbered ``>= T`` (from an earlier, longer run) are
    removed so that reading the directory back gives exactly this sequence.
    """
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (layout.NUM_KEYPOINTS, 3):
        raise EdnError(f"keypoint sequence has shape {keypoints.shape}, "
                       f"expected (T, {layout.NUM_KEYPOINTS}, 3)",
                       "pass poses in the canonical layout of edn_jax.pose.layout")
    dirpath = Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    for t, pose in enumerate(keypoints):
        write_frame_json(frame_path(dirpath, t, prefix), [pose] if (pose[:, 2] > 0).any() else [])
    for path in dirpath.glob(f"{prefix}_*{SUFFIX}"):
        match = _FRAME_NAME.match(path.name)
        if match and match.group(1) == prefix and int(match.group(2)) >= len(keypoints):
            path.unlink()


def _frame_files(dirpath: PathLike) -> list[Path]:
    """The ``*_keypoints.json`` files of a directory, in frame-number order."""
    dirpath = Path(dirpath)
    if not dirpath.is_dir():
        raise EdnError(f"keypoint directory {dirpath} does not exist",
                       "pass the folder given to OpenPose --write_json")
    numbered = {}
    for path in dirpath.glob(f"*{SUFFIX}"):
        match = _FRAME_NAME.match(path.name)
        if match is None:
            raise EdnError(f"cannot read a frame number from {path}",
                           "name files <name>_<frame number>_keypoints.json as OpenPose does")
        t = int(match.group(2))
        if t in numbered:
            raise EdnError(f"{numbered[t]} and {path} are both frame {t}",
                           "keep the keypoints of one video per directory")
        numbered[t] = path
    if not numbered:
        raise EdnError(f"no *{SUFFIX} files in {dirpath}",
                       "run OpenPose with --write_json on this folder or pass the right one")
    return [numbered[t] for t in sorted(numbered)]


def read_sequence_people(dirpath: PathLike) -> list[list[np.ndarray]]:
    """Every person of every frame, in frame order, for a tracker to choose from."""
    return [read_frame_json(path) for path in _frame_files(dirpath)]


def read_sequence(dirpath: PathLike, person: int | Selector = 0) -> np.ndarray:
    """A [T, 137, 3] float32 sequence with one person per frame.

    Frames are ordered by the number in their names, one row per file. ``person``
    is an index into each frame's people or a callable given each frame's list of
    people in turn (a tracker) returning a pose or None. Frames without that
    person are all-missing.
    """
    if not callable(person) and (isinstance(person, bool) or not isinstance(person, int) or person < 0):
        raise EdnError(f"person={person!r} is not valid",
                       "pass a non-negative person index or a selector function")
    frames = []
    for people in read_sequence_people(dirpath):
        if callable(person):
            pose = person(people)
        else:
            pose = people[person] if person < len(people) else None
        frames.append(layout.empty_pose() if pose is None else np.asarray(pose, np.float32))
    return np.stack(frames)
