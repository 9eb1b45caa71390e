"""The training batch: temporal pairs (frame t-1, frame t), as the input pipeline builds it and both
stage trainers read it.

A ``Batch`` is a pytree (``flax.struct.dataclass``): the pipeline fills it with numpy arrays on
each host, ``TrainIterator`` turns each field into one global ``jax.Array`` sharded along the
batch, and a trainer passes the fields its step reads (``only``) to its jitted step. A field
that is None is an empty subtree: it is not transferred, and the step's shape is compiled
without it. Fields come in pairs, ``<name>_prev`` for frame t-1 and ``<name>`` for frame t.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import struct

IMAGE_FIELDS = ("label_prev", "label", "image_prev", "image")  # what every stage's step reads
FACE_FIELDS = ("face_box_prev", "face_box", "face_valid_prev", "face_valid")  # the face stage's too
PLATE_FIELDS = ("background",)  # with model.background
EXEMPLAR_FIELDS = ("exemplar_prev", "exemplar")  # with model.exemplar


@struct.dataclass
class Batch:
    """B pairs of frames (B: the global batch, or one process's rows of it on the host).

    Images are float32 in [-1, 1]; keypoints and boxes are in pixels of the output frame, into
    which each record was fit keeping its aspect (black bars).
    """

    label_prev: Any = None       # stick figures [B, H, W, 3]
    label: Any = None
    image_prev: Any = None       # real frames [B, H, W, 3]
    image: Any = None
    keypoints_prev: Any = None   # float32 [B, 137, 3] (x, y, confidence)
    keypoints: Any = None
    face_box_prev: Any = None    # float32 [B, 4] x0, y0, x1, y1 (zeros without a face)
    face_box: Any = None
    face_valid_prev: Any = None  # bool [B]
    face_valid: Any = None
    frame_index: Any = None      # int32 [B, 2] (t-1, t) in their video
    video_id: Any = None         # int32 [B, 2]
    background: Any = None       # the plate [B, H, W, 3], moved as each pair was (model.background)
    exemplar_prev: Any = None    # a training frame near the pose and its figure [B, H, W, 6] (model.exemplar)
    exemplar: Any = None

    def only(self, names) -> Batch:
        """This batch with every field outside ``names`` left out (None)."""
        names = set(names)
        return self.replace(**{f.name: None for f in dataclasses.fields(self) if f.name not in names})

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
