"""A built-in synthetic subject: a cartoon person dancing on a stage, with exact keypoints.

It is the demo input and the main test fixture, and a generator is trained on it, so
it must look like the videos the project is made for: one person, fixed clothes, a
static background, full-body framing, moving left/right and near/far (nearer is lower
and larger), turning, stepping and waving. The pose is built in 3D (body units of
standing height), projected with a slightly downward-looking orthographic camera and
placed on the floor with a perspective scale. The frame is then drawn from the 137
canonical keypoints alone, so any canonical pose can be rendered and every keypoint
lies on the drawn figure.
"""

from edn_jax.synthetic.motion import synthetic_keypoints
from edn_jax.synthetic.painter import APPEARANCES, SyntheticClip, render_synthetic_frame, synthetic_clip

__all__ = ["APPEARANCES", "SyntheticClip", "render_synthetic_frame", "synthetic_clip", "synthetic_keypoints"]
