"""Images people look at: sample grids (stick figure | generated | real, or more panels), written
atomically as PNG."""

from __future__ import annotations

import cv2
import jax.numpy as jnp
import numpy as np

from edn_jax.errors import EdnError
from edn_jax.runtime.fileio import atomic_path


def to_uint8(x):
    """[-1, 1] images -> uint8 [0, 255], rounding half up (sample grids, videos)."""
    return jnp.clip((jnp.asarray(x, jnp.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)


def image_grid(label, fake, real) -> np.ndarray:
    """Rows of (stick figure | generated | real), uint8, from [-1, 1] or uint8 images."""
    to_u8 = lambda x: np.asarray(x) if np.asarray(x).dtype == np.uint8 else np.asarray(to_uint8(x))  # noqa: E731
    rows = [np.concatenate([to_u8(l), to_u8(f), to_u8(r)], axis=1) for l, f, r in zip(label, fake, real)]
    return np.concatenate(rows, axis=0)


def write_png(path: str, image: np.ndarray) -> None:
    """An RGB uint8 image as a PNG that appears at ``path`` only once complete."""
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise EdnError(f"cannot write {path}", "check free disk space and permissions")
