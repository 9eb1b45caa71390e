"""Fixed-size face crops for the face GAN: per-example boxes, jit-able, batched, shardable.

Every frame's crop has the same static size, so a batch of crops is one array and
the whole face stage jits once. Corners are per example (int32 [B, 2] = y0, x0) and
crops are ``vmap``-ed ``dynamic_slice`` / ``dynamic_update_slice``: no Python loop
over the batch (the original EDN code indexed a single box and broke at batch > 1),
and arrays sharded on their batch axis stay sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from edn_jax.errors import EdnError

def _check_fits(height: int, width: int, size: int) -> None:
    if not 0 < size <= min(height, width):
        raise EdnError(f"face crop size {size} does not fit a {height}x{width} frame",
                       "use a size between 1 and the frame's smaller side (see stages.face_crop_size)")


def crop_boxes(face_box: jnp.ndarray, face_valid: jnp.ndarray, height: int, width: int,
               size: int) -> jnp.ndarray:
    """Top-left corners (int32 [B, 2]: y0, x0) of ``size`` px crops centred on each face box.

    ``face_box`` is float [B, 4] (x0, y0, x1, y1) as ``render.face_boxes``. The crop's
    middle pixel is rounded onto the box centre as in ``render.fixed_size_face_box``,
    then the crop is shifted to lie inside the frame. Invalid faces (and non-finite
    boxes) get (0, 0): any in-frame position works, since the caller masks their loss.
    """
    _check_fits(height, width, size)
    box = jnp.asarray(face_box, jnp.float32)
    centre_yx = jnp.stack([box[:, 1] + box[:, 3], box[:, 0] + box[:, 2]], axis=-1) / 2
    corner = jnp.floor(centre_yx + 1 - size / 2)
    corner = jnp.clip(corner, 0, jnp.array([height - size, width - size], jnp.float32))
    valid = jnp.asarray(face_valid, bool)[:, None] & jnp.all(jnp.isfinite(corner), axis=-1, keepdims=True)
    return jnp.where(valid, corner, 0).astype(jnp.int32)


def crop(images: jnp.ndarray, corners: jnp.ndarray, size: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B, size, size, C], each example cut at its own corner."""
    def one(image, corner):
        return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (size, size, image.shape[-1]))

    _check_fits(images.shape[1], images.shape[2], size)
    return jax.vmap(one)(images, corners)


def paste(images: jnp.ndarray, crops: jnp.ndarray, corners: jnp.ndarray) -> jnp.ndarray:
    """``images`` with each example's crop written back at its corner (cast to the images' dtype)."""
    def one(image, patch, corner):
        return jax.lax.dynamic_update_slice(image, patch, (corner[0], corner[1], 0))

    return jax.vmap(one)(images, crops.astype(images.dtype), corners)
