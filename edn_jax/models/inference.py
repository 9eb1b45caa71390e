"""Sequential rendering: each frame is generated from its stick figure and the previous output.

One ``jax.lax.scan`` over a chunk of frames, carrying the previous output, so a
whole chunk is a single compiled call; chunks are chained by passing the returned
carry on, so a video of any length renders in constant memory. ``BatchRenderer``
renders several videos at once, the video axis sharded over a mesh of local devices,
through one compiled function.

With a face model, each frame's face crop is refined by the face residual
generator and pasted back, and the next frame is rendered from that refined frame,
as the original release renders and as the face stage trains (``model.face_prev =
"refined"``); with ``"raw"`` the carry is the main generator's own output.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from edn_jax.conditioning import face_crop
from edn_jax.conditioning import background as background_lib
from edn_jax.models.factory import uses_exemplar
from edn_jax.runtime import sharding
from edn_jax.runtime.images import to_uint8


def generator_input(label, prev_output, prev_label, use_prev_label: bool, temporal: bool = True, background=None,
                    exemplar=None):
    """G's input: the stick figure, its previous output (blank for the first frame), optionally the
    previous figure; with ``temporal=False`` (single-frame pix2pixHD, the paper's baseline) the figure
    alone; then the background plate when given (``model.background``), broadcast over the batch,
    and the exemplar [B, H, W, 6] when given (``model.exemplar``: a training frame and its figure)."""
    parts = [label] + ([prev_output] + ([prev_label] if use_prev_label else []) if temporal else [])
    if background is not None:
        parts.append(jnp.broadcast_to(jnp.asarray(background, label.dtype), label.shape))
    if exemplar is not None:
        parts.append(jnp.asarray(exemplar, label.dtype))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def generate(generator, g_params, g_in, background=None, mode: str = "none", copy_from=None, region: float = 0.0):
    """The main generator's frame for input ``g_in`` (float32; ``generator_input``'s, so its first 3
    channels are the stick figure): its output; with ``copy_from`` (the exemplar frames [B, H, W, 3],
    ``model.exemplar="copy"``) its last channel is a copy mask c and the colours are
    ``c * copy_from + (1 - c) * G's``; with ``mode="composite"`` those colours go over ``background``
    through its mask channel, confined to ``region`` (``model.composite_region``) around the figure."""
    out = generator.apply({"params": g_params}, g_in).astype(jnp.float32)
    if copy_from is not None:
        copy = (out[..., -1:] + 1.0) * 0.5
        colours = copy * jnp.asarray(copy_from, out.dtype) + (1.0 - copy) * out[..., :3]
        out = jnp.concatenate([colours, out[..., 3:-1]], axis=-1)
    if mode != "composite":
        return out
    return background_lib.composite(out, background, g_in[..., :3] if region > 0 else None, region)


def copy_source(exemplar, mode: str):
    """What ``generate`` copies from: the exemplar's frame (its first 3 channels) for ``model.exemplar="copy"``."""
    return exemplar[..., :3] if mode == "copy" and exemplar is not None else None


@dataclasses.dataclass(frozen=True)
class Renderer:
    """The static half of a trained model (modules and its ``model`` section; hashable, so jit
    treats it as static).

    The other half is its params: ``{"g": main generator params, "face": face generator
    params or None, "background": the plate [1, H, W, 3] in [-1, 1] or None}``. ``generator`` is a
    GlobalGenerator or a LocalEnhancer. Rendering reads its flags from ``model``, the config's
    model section as the model was trained (``model.temporal``, ``model.background``,
    ``model.exemplar``, ...), frozen.
    """

    generator: Any
    model: ml_collections.FrozenConfigDict
    face_generator: Any = None
    face_crop: int = 0  # face crop side (px) the face generator works on

    @classmethod
    def from_config(cls, config, generator, face_generator=None, face_side: int = 0) -> "Renderer":
        """A renderer of ``generator`` (and the face generator) reading the config's model section."""
        return cls(generator, ml_collections.FrozenConfigDict(config.model), face_generator, face_side)

    @property
    def has_face(self) -> bool:
        return self.face_generator is not None

    @property
    def uses_plate(self) -> bool:
        return background_lib.uses_plate(self.model.background)

    @property
    def uses_exemplar(self) -> bool:
        return uses_exemplar(self.model.exemplar)


def refine_faces(renderer: Renderer, face_params, frames, labels, face_boxes, face_valid):
    """``frames`` [B, H, W, 3] with each valid face crop replaced by the face generator's refinement."""
    h, w = frames.shape[1:3]
    corners = face_crop.crop_boxes(face_boxes, face_valid, h, w, renderer.face_crop)
    g_crop = face_crop.crop(frames, corners, renderer.face_crop)
    label_crop = face_crop.crop(labels, corners, renderer.face_crop)
    refined = renderer.face_generator.apply({"params": face_params}, label_crop, g_crop).astype(frames.dtype)
    valid = jnp.asarray(face_valid, bool)[:, None, None, None]
    return face_crop.paste(frames, jnp.where(valid, refined, g_crop), corners)


def initial_carry(height: int, width: int):
    """The carry before a video's first frame: a blank (mid-grey) previous output and stick figure."""
    blank = jnp.zeros((1, height, width, 3), jnp.float32)
    return blank, blank


def check_exemplars(renderer: Renderer, exemplars) -> None:
    """A model with ``model.exemplar`` needs each frame's exemplar; one without takes none."""
    if renderer.uses_exemplar != (exemplars is not None):
        raise ValueError("a model trained with model.exemplar renders from each frame's exemplar (pass exemplars=)"
                         if renderer.uses_exemplar else
                         "this model was trained without model.exemplar: pass no exemplars")


@functools.partial(jax.jit, static_argnames=("renderer", "apply_face"))
def render_chunk(renderer: Renderer, params, labels, face_boxes, face_valid, carry, apply_face: bool = True,
                 exemplars=None):
    """Renders [T, H, W, 3] stick figures (in [-1, 1]) given the carry from the frame before the chunk.

    ``face_boxes`` float32 [T, 4] and ``face_valid`` bool [T] place the face crops (ignored
    without a face model or with ``apply_face=False``); ``exemplars`` [T, H, W, 6] in [-1, 1] are
    the frames' exemplars for a model with ``model.exemplar`` (``edn_jax.conditioning.exemplar``). Returns
    (outputs [T, H, W, 3], carry) to continue with the next chunk; for a video's first chunk pass
    ``initial_carry``.
    """
    check_exemplars(renderer, exemplars)
    use_face = apply_face and renderer.has_face
    plate = params.get("background") if renderer.uses_plate else None

    def step(carry, frame):
        prev, prev_label = carry
        label, box, valid, exemplar = frame
        m = renderer.model
        g_in = generator_input(label[None], prev, prev_label, m.use_prev_label, m.temporal, plate,
                               None if exemplar is None else exemplar[None])
        out = generate(renderer.generator, params["g"], g_in, plate, m.background,
                       copy_source(None if exemplar is None else exemplar[None], m.exemplar),
                       float(m.composite_region))
        shown = refine_faces(renderer, params["face"], out, label[None], box[None], valid[None]) if use_face else out
        return (shown if m.face_prev == "refined" else out, label[None]), shown[0]

    carry, outputs = jax.lax.scan(step, carry, (labels, jnp.asarray(face_boxes, jnp.float32),
                                                jnp.asarray(face_valid, bool), exemplars))
    return outputs, carry


def render_devices(slots: int, devices=None) -> list:
    """The devices ``slots`` videos are spread over: the most local devices that divide them evenly."""
    devices = list(devices if devices is not None else jax.local_devices())
    count = max(d for d in range(1, min(len(devices), slots) + 1) if slots % d == 0)
    return devices[:count]


@functools.partial(jax.jit, static_argnames=("renderer", "sharding", "apply_face"), donate_argnames=("carry",))
def render_batch(renderer, params, labels, boxes, valid, carry, reset, sharding=None, apply_face: bool = True,
                 exemplars=None):
    """``render_chunk`` over a leading video axis: uint8 stick figures [B, T, H, W, 3], face boxes
    [B, T, 4] and valid [B, T], per-video carries ([B, 1, H, W, 3] twice), and for ``model.exemplar``
    uint8 exemplars [B, T, H, W, 6] -> (uint8 outputs [B, T, H, W, 3], carry). ``reset[b]`` starts
    video b from a blank previous frame; ``sharding`` (static) keeps the outputs and carry split
    over the video axis."""
    h, w = labels.shape[2:4]
    keep = ~reset[:, None, None, None, None]
    carry = tuple(jnp.where(keep, c, blank[None]) for c, blank in zip(carry, initial_carry(h, w)))
    labels = labels.astype(jnp.float32) / 127.5 - 1.0
    if exemplars is not None:
        exemplars = exemplars.astype(jnp.float32) / 127.5 - 1.0
    one_video = lambda *a: render_chunk(renderer, params, *a[:4], apply_face=apply_face, exemplars=a[4])  # noqa: E731
    outputs, carry = jax.vmap(one_video)(labels, boxes, valid, carry, exemplars)
    outputs = to_uint8(outputs)
    if sharding is not None:
        outputs, carry = jax.lax.with_sharding_constraint((outputs, carry), sharding)
    return outputs, carry


class BatchRenderer:
    """``slots`` videos rendered side by side, ``chunk`` frames per call, through one compiled function.

    The video axis is sharded over a mesh of the local devices (data axis); params are
    replicated. Each slot's carry stays on the devices between calls; ``reset[i]`` starts
    slot i from a blank previous frame (a new video). ``render_batch`` is jitted at module
    level, so renderers of the same model and shapes share its compilation. ``model`` is a
    trained model (``checkpoints.TrainedModel``: renderer, params, stage).
    """

    def __init__(self, model, slots: int, chunk: int, devices=None, apply_face: bool = True):
        if slots < 1 or chunk < 1:
            raise ValueError(f"slots={slots} and chunk={chunk} must be >= 1")
        self.renderer, self.apply_face = model.renderer, apply_face
        self.slots, self.chunk = slots, chunk
        self.height, self.width = model.stage.height, model.stage.width
        self.mesh = sharding.local_mesh(render_devices(slots, devices))
        self.sharding = sharding.batch_sharding(self.mesh)
        # The restored params may live on other devices (or other hosts): one replica, put on this mesh.
        self.params = jax.device_put(sharding.first_replica(model.params), sharding.replicated(self.mesh))
        blank = initial_carry(self.height, self.width)
        self.carry = jax.device_put(tuple(np.broadcast_to(np.asarray(b)[None], (slots,) + b.shape) for b in blank),
                                    self.sharding)

    def dispatch(self, labels: np.ndarray, boxes: np.ndarray, valid: np.ndarray, reset: np.ndarray,
                 exemplars: np.ndarray | None = None):
        """Starts rendering uint8 stick figures [B, T, H, W, 3] (face boxes [B, T, 4], valid [B, T],
        uint8 exemplars [B, T, H, W, 6] for ``model.exemplar``); returns the uint8 outputs
        [B, T, H, W, 3] as a device array (asynchronous: ``np.asarray`` waits)."""
        check_exemplars(self.renderer, exemplars)
        inputs = jax.device_put((labels, boxes, valid, np.asarray(reset, bool), exemplars), self.sharding)
        outputs, self.carry = render_batch(self.renderer, self.params, *inputs[:3], self.carry, inputs[3],
                                           sharding=self.sharding, apply_face=self.apply_face, exemplars=inputs[4])
        return outputs

    def __call__(self, labels, boxes, valid, reset, exemplars=None) -> np.ndarray:
        return np.asarray(self.dispatch(labels, boxes, valid, reset, exemplars))

    def slot_carry(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Slot ``slot``'s carry on the host: (previous output, previous stick figure), [1, H, W, 3] each."""
        return tuple(np.asarray(c[slot]) for c in self.carry)

    def set_slot_carry(self, slot: int, carry) -> None:
        """Continues slot ``slot`` from ``carry`` (as ``slot_carry`` gave it) instead of its own."""
        host = [np.array(c) for c in jax.device_get(self.carry)]
        for whole, part in zip(host, carry, strict=True):
            whole[slot] = np.asarray(part, whole.dtype).reshape(whole.shape[1:])
        self.carry = jax.device_put(tuple(host), self.sharding)
