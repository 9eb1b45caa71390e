"""Training: pix2pixHD with temporal smoothing, one sharded jitted step for G and D.

``train_and_evaluate(config, workdir)`` builds (or opens) the dataset, creates the
generator, the temporal multiscale discriminator and both Adam states already
sharded over a data-parallel mesh, then loops: batch -> jitted step -> metrics,
samples and checkpoints. It resumes automatically from the newest checkpoint in
``workdir`` (also after SIGTERM, which saves one first) and, because the input
pipeline is a pure function of (seed, step), a resumed run reproduces an
uninterrupted one exactly.

The step follows the paper's temporal smoothing: G renders frame t-1 from its
stick figure and a blank previous frame, then frame t from its stick figure and
that output, with gradients flowing through G(x_{t-1}) into G(x_t). The
discriminator judges (x_{t-1}, x_t, y_{t-1}, y_t) against
(x_{t-1}, x_t, G(x_{t-1}), G(x_t)).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from edn_jax import losses
from edn_jax.errors import EdnError

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    rng: jax.Array  # raw uint32 key data, so checkpoints need no typed-key support


# ----------------------------------------------------------------------------- configuration


def compute_dtype(config) -> jnp.dtype:
    names = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if config.model.dtype not in names:
        raise EdnError(f"model.dtype={config.model.dtype!r} is not supported", "use float32 or bfloat16")
    return names[config.model.dtype]


def validate_train_config(config) -> None:
    """Every training value checked before anything slow starts."""
    m, t, l = config.model, config.train, config.loss
    checks = [
        (m.ngf >= 1, f"model.ngf={m.ngf} must be >= 1", "use e.g. 64"),
        (m.ndf >= 1, f"model.ndf={m.ndf} must be >= 1", "use e.g. 64"),
        (0 <= m.n_downsampling <= 8, f"model.n_downsampling={m.n_downsampling} is out of range", "use 1..8 (paper: 4)"),
        (m.n_blocks >= 0, f"model.n_blocks={m.n_blocks} must be >= 0", "use e.g. 9"),
        (m.num_d >= 1, f"model.num_d={m.num_d} must be >= 1", "use e.g. 2 or 3"),
        (m.n_layers_d >= 1, f"model.n_layers_d={m.n_layers_d} must be >= 1", "use e.g. 3"),
        (t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1", "use e.g. 8"),
        (t.num_steps >= 1, f"train.num_steps={t.num_steps} must be >= 1", "set the number of training steps"),
        (t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0", "use e.g. 2e-4"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"train.beta1/beta2=({t.beta1}, {t.beta2}) must be in [0, 1)",
         "use 0.5 and 0.999"),
        (0 <= t.decay_steps <= t.num_steps, f"train.decay_steps={t.decay_steps} is outside [0, num_steps]",
         "use e.g. half of train.num_steps"),
        (t.log_every >= 1 and t.checkpoint_every >= 1 and t.sample_every >= 1,
         "train.log_every, checkpoint_every and sample_every must be >= 1", "use positive step counts"),
        (l.lambda_feat >= 0 and l.lambda_vgg >= 0 and l.lambda_l1 >= 0,
         "loss.lambda_feat, loss.lambda_vgg and loss.lambda_l1 must be >= 0", "use 10, 10 and 0 (pix2pixHD)"),
        (l.perceptual in ("vgg16", "vgg19", "none"), f"loss.perceptual={l.perceptual!r} is not known",
         "use vgg16, vgg19 or none"),
        (t.height >= 16 and t.width >= 16, f"train size {t.height}x{t.width} is too small", "use e.g. 256x256"),
    ]
    for ok, problem, fix in checks:
        if not ok:
            raise EdnError(problem, fix)
    factor = 2 ** m.n_downsampling
    if t.height % factor or t.width % factor:
        raise EdnError(f"train size {t.height}x{t.width} is not divisible by 2^n_downsampling = {factor}",
                       f"use a size that is a multiple of {factor}, or fewer downsamplings")
    compute_dtype(config)
    if jax.device_count() and t.batch_size % jax.device_count():
        raise EdnError(f"train.batch_size={t.batch_size} does not split over {jax.device_count()} devices",
                       f"use a multiple of {jax.device_count()}")


def build_models(config):
    from edn_jax.models import GlobalGenerator, MultiscaleDiscriminator

    dtype = compute_dtype(config)
    m = config.model
    generator = GlobalGenerator(output_nc=3, ngf=m.ngf, n_downsampling=m.n_downsampling, n_blocks=m.n_blocks,
                                dtype=dtype)
    discriminator = MultiscaleDiscriminator(num_d=m.num_d, ndf=m.ndf, n_layers=m.n_layers_d, dtype=dtype)
    return generator, discriminator


def generator_input(label, prev_output, prev_label, use_prev_label: bool):
    """G's input: the stick figure, its previous output (blank for the first frame), optionally the previous figure."""
    parts = [label, prev_output] + ([prev_label] if use_prev_label else [])
    return jnp.concatenate(parts, axis=-1)


def render_pair(generator, g_params, label_prev, label, use_prev_label: bool):
    """G's outputs for frames t-1 and t as the paper trains them: t-1 from a blank (mid-grey)
    previous frame, t from G's own output for t-1, so gradients flow through G(x_{t-1})."""
    blank = jnp.zeros_like(label_prev)
    fake_prev = generator.apply({"params": g_params}, generator_input(label_prev, blank, blank, use_prev_label))
    fake = generator.apply({"params": g_params}, generator_input(label, fake_prev, label_prev, use_prev_label))
    return fake_prev.astype(jnp.float32), fake.astype(jnp.float32)


def learning_rate(config):
    """Constant, then linear decay to zero over the last ``decay_steps`` (pix2pixHD's niter / niter_decay)."""
    t = config.train
    constant = t.num_steps - t.decay_steps
    if t.decay_steps == 0:
        return optax.constant_schedule(t.learning_rate)
    return optax.join_schedules(
        [optax.constant_schedule(t.learning_rate), optax.linear_schedule(t.learning_rate, 0.0, t.decay_steps)],
        [constant])


def make_optimizers(config):
    lr = learning_rate(config)
    make = lambda: optax.adam(lr, b1=config.train.beta1, b2=config.train.beta2)  # noqa: E731
    return make(), make(), lr


# ----------------------------------------------------------------------------- state and step


def init_state(config, rng, generator, discriminator, g_tx, d_tx) -> TrainState:
    t = config.train
    g_rng, d_rng, rng = jax.random.split(rng, 3)
    image = jnp.zeros((1, t.height, t.width, 3), jnp.float32)
    g_in = generator_input(image, image, image, config.model.use_prev_label)
    g_params = generator.init(g_rng, g_in)["params"]
    d_params = discriminator.init(d_rng, jnp.concatenate([image] * 4, axis=-1))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), rng=rng)


def train_step(state: TrainState, batch, perceptual, *, config, generator, discriminator, g_tx, d_tx):
    """One G and one D update from the same forward pass (as pix2pixHD), guarded against NaN/Inf."""
    use_prev = config.model.use_prev_label
    lambda_feat, lambda_vgg, lambda_l1 = config.loss.lambda_feat, config.loss.lambda_vgg, config.loss.lambda_l1
    label_prev, label = batch["label_prev"], batch["label"]
    image_prev, image = batch["image_prev"], batch["image"]
    real = jnp.concatenate([label_prev, label, image_prev, image], axis=-1)

    def g_loss_fn(g_params):
        fake_prev, fake = render_pair(generator, g_params, label_prev, label, use_prev)
        fake_in = jnp.concatenate([label_prev, label, fake_prev, fake], axis=-1)
        d_fake = discriminator.apply({"params": state.d_params}, fake_in)
        d_real = discriminator.apply({"params": state.d_params}, real)
        terms = {"g_gan": losses.lsgan_g_loss(d_fake),
                 "g_feat": losses.feature_matching_loss(d_real, d_fake, lambda_feat)}
        if lambda_l1 > 0:
            terms["g_l1"] = lambda_l1 * (jnp.mean(jnp.abs(fake - image)) + jnp.mean(jnp.abs(fake_prev - image_prev)))
        if perceptual is not None:
            terms["g_vgg"] = lambda_vgg * (perceptual(fake, image) + perceptual(fake_prev, image_prev))
        total = sum(terms.values())
        return total, (terms, fake_prev, fake)

    (g_total, (terms, fake_prev, fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    fake_in = jax.lax.stop_gradient(jnp.concatenate([label_prev, label, fake_prev, fake], axis=-1))

    def d_loss_fn(d_params):
        d_real = discriminator.apply({"params": d_params}, real)
        d_fake = discriminator.apply({"params": d_params}, fake_in)
        return losses.lsgan_d_loss(d_real, d_fake)

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
    updated = state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, g_updates),
                            d_params=optax.apply_updates(state.d_params, d_updates),
                            g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    metrics = dict(terms, g_total=g_total, d_loss=d_loss,
                   g_grad_norm=optax.tree.norm(g_grads), d_grad_norm=optax.tree.norm(d_grads),
                   g_param_norm=optax.tree.norm(updated.g_params), d_param_norm=optax.tree.norm(updated.d_params))
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    # A non-finite step leaves the state untouched except the step count; the host stops at the next check.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    new_state = new_state.replace(step=state.step + 1)
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return new_state, metrics


@dataclasses.dataclass
class Trainer:
    """The jitted, sharded pieces of one training configuration."""

    config: Any
    mesh: Mesh
    generator: Any
    discriminator: Any
    g_tx: Any
    d_tx: Any
    lr_schedule: Any
    perceptual: Any  # losses.PerceptualLoss (a pytree holding the VGG params) or None
    state_sharding: Any = None
    init_fn: Any = None
    step_fn: Any = None
    sample_fn: Any = None  # (g_params, label_prev, label) -> (fake_prev, fake), for sample grids

    @classmethod
    def create(cls, config, mesh: Mesh) -> "Trainer":
        generator, discriminator = build_models(config)
        g_tx, d_tx, lr = make_optimizers(config)
        perceptual = losses.make_perceptual_loss(
            config.loss.perceptual if config.loss.perceptual != "none" else "vgg16", config.loss.vgg19_weights,
            enabled=config.loss.lambda_vgg > 0 and config.loss.perceptual != "none")
        replicated = NamedSharding(mesh, P())
        if perceptual is not None:
            perceptual = jax.device_put(perceptual, replicated)
        self = cls(config, mesh, generator, discriminator, g_tx, d_tx, lr, perceptual)
        init = functools.partial(init_state, config, generator=generator, discriminator=discriminator,
                                 g_tx=g_tx, d_tx=d_tx)
        abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
        self.state_sharding = jax.tree.map(lambda _: replicated, abstract)
        self.init_fn = jax.jit(init, out_shardings=self.state_sharding)
        batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
        step = functools.partial(train_step, config=config, generator=generator, discriminator=discriminator,
                                 g_tx=g_tx, d_tx=d_tx)
        self.step_fn = jax.jit(step, in_shardings=(self.state_sharding, batch_sharding, replicated),
                               out_shardings=(self.state_sharding, replicated), donate_argnums=(0,))
        self.sample_fn = jax.jit(functools.partial(render_pair, generator, use_prev_label=config.model.use_prev_label))
        return self

    def init(self, seed: int) -> TrainState:
        return self.init_fn(jax.random.PRNGKey(seed))

    def step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        train_batch = {k: batch[k] for k in ("label_prev", "label", "image_prev", "image")}
        return self.step_fn(state, train_batch, self.perceptual)

    def abstract_state(self):
        abstract = jax.eval_shape(self.init, 0)
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                            self.state_sharding)


def make_mesh(devices=None) -> Mesh:
    """A data-parallel mesh over all devices of all hosts."""
    devices = np.array(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


# ----------------------------------------------------------------------------- checkpoints


def model_signature(config) -> dict:
    """What must match for a checkpoint to be restored into this configuration."""
    return {"model": config.model.to_dict(), "height": config.train.height, "width": config.train.width}


class Checkpoints:
    """Orbax manager for TrainState plus JSON metadata (input position, model signature)."""

    def __init__(self, workdir: str, config):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True),
            item_names=("state", "meta"))
        self.signature = model_signature(config)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, input_state: dict, force: bool = False) -> None:
        ocp = self._ocp
        meta = {"input": input_state, "signature": self.signature}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                          force=force)

    def restore(self, step: int, abstract_state) -> tuple[TrainState, dict]:
        ocp = self._ocp
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any failure to read is a corrupt checkpoint to the user
            raise EdnError(f"cannot read the checkpoint at step {step} in {self.directory} ({type(e).__name__})",
                           "delete that step's directory to fall back to an earlier one, or use a new --workdir")
        if meta.get("signature") != self.signature:
            raise EdnError(f"{self.directory} holds a checkpoint of a different model ({meta.get('signature')})",
                           "use a new --workdir, or the config that trained it")
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
        except Exception as e:  # noqa: BLE001
            raise EdnError(f"cannot restore the checkpoint at step {step} in {self.directory} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120]})", "delete that step's directory or use a new --workdir")
        return restored, meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


# ----------------------------------------------------------------------------- the loop


def _image_grid(label, fake, real) -> np.ndarray:
    """Rows of (stick figure | generated | real), uint8."""
    to_u8 = lambda x: np.clip((np.asarray(x, np.float32) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    rows = [np.concatenate([to_u8(l), to_u8(f), to_u8(r)], axis=1) for l, f, r in zip(label, fake, real)]
    return np.concatenate(rows, axis=0)


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2

    from edn_jax.fileio import atomic_path

    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise EdnError(f"cannot write {path}", "check free disk space and permissions")


class _Preemption:
    """Turns SIGTERM (Cloud TPU preemption) into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def open_training_data(config, workdir: str):
    """The training split: ``data.dataset_dir`` if set, else built into the workdir on first use."""
    from edn_jax import build, dataset

    directory = config.data.dataset_dir
    if not directory:
        builder = build.make_builder(config, workdir, size=(config.train.height, config.train.width))
        directory = str(builder.data_dir)
        if not os.path.exists(os.path.join(directory, "dataset_info.json")):
            print(f"building the training dataset at {directory}")
            builder.download_and_prepare()
    return dataset.open_split(directory, "train"), directory


def _records_at(split, indices, height: int, width: int):
    """(frames, stick figures) in [-1, 1] and body boxes [N, 4] of records, at the training size."""
    from edn_jax.input_pipeline import fit_record
    from edn_jax.pose.tracking import person_box

    frames, labels, boxes = [], [], []
    for i in indices:
        record = split.source[int(i)]
        frame, kps, label, _ = fit_record(np.asarray(record["frame"]), np.asarray(record["keypoints"], np.float32),
                                          height, width)
        frames.append(frame)
        labels.append(label)
        box = person_box(kps, 0.05)
        boxes.append(np.array([0, 0, width, height], np.float32) if box is None else box)
    scale = lambda x: np.stack(x).astype(np.float32) / 127.5 - 1.0  # noqa: E731
    return scale(frames), scale(labels), np.stack(boxes)


def evaluate_holdout(config, trainer: Trainer, g_params, dataset_dir: str, max_frames: int = 64) -> dict:
    """Self-reenactment on held-out frames: SSIM of sequential renders vs the real frames,
    next to a trivial baseline (the mean training frame), so "it learned something" is a number."""
    from edn_jax import dataset, inference, metrics

    t = config.train
    val, train = dataset.open_split(dataset_dir, "validation"), dataset.open_split(dataset_dir, "train")
    order = np.lexsort((val.frame_indices, val.video_ids))[:max_frames]
    real, labels, body_boxes = _records_at(val, order, t.height, t.width)
    outputs = []
    for video in np.unique(val.video_ids[order]):
        rows = val.video_ids[order] == video
        blank = jnp.zeros((1, t.height, t.width, 3), jnp.float32)
        out, _, _ = inference.render_chunk(trainer.generator, g_params, jnp.asarray(labels[rows]), blank, blank,
                                           config.model.use_prev_label)
        outputs.append(np.asarray(out))
    fake = np.concatenate(outputs)
    sample = np.linspace(0, len(train.source) - 1, min(len(train.source), 64)).astype(int)
    mean_frame = np.broadcast_to(_records_at(train, sample, t.height, t.width)[0].mean(0, keepdims=True), real.shape)
    to01 = lambda x: (jnp.asarray(x) + 1.0) / 2.0  # noqa: E731
    score = lambda x: float(jnp.mean(metrics.ssim(to01(x), to01(real))))  # noqa: E731
    body = lambda x: float(jnp.mean(metrics.masked_ssim(to01(x), to01(real), jnp.asarray(body_boxes))))  # noqa: E731
    return {"holdout_frames": int(len(real)),
            "ssim_generated": score(fake), "ssim_mean_train_frame": score(mean_frame),
            "body_ssim_generated": body(fake), "body_ssim_mean_train_frame": body(mean_frame),
            "l1_generated": float(np.abs(fake - real).mean() / 2), "l1_mean_train_frame": float(np.abs(mean_frame - real).mean() / 2),
            "grid": _image_grid(labels[:4], fake[:4], real[:4])}


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (resuming from ``workdir`` if it holds checkpoints); returns the final metrics."""
    from clu import metric_writers, periodic_actions

    from edn_jax import input_pipeline, progress

    validate_train_config(config)
    t = config.train
    os.makedirs(workdir, exist_ok=True)
    split, dataset_dir = open_training_data(config, workdir)
    mesh = make_mesh()
    trainer = Trainer.create(config, mesh)
    checkpoints = Checkpoints(workdir, config)
    start = checkpoints.latest_step()
    if start is None:
        state, start = trainer.init(t.seed), 0
    else:
        state, meta = checkpoints.restore(start, trainer.abstract_state())
        start = int(meta["input"]["step"])
        print(f"resuming from the checkpoint at step {start} in {checkpoints.directory}")
    if start >= t.num_steps:
        print(f"already trained for {start} steps (train.num_steps={t.num_steps})")

    writer = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                                  just_logging=jax.process_index() > 0)
    if start == 0:
        writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items() if isinstance(v, (int, float, str, bool))})
    report = periodic_actions.ReportProgress(num_train_steps=t.num_steps, writer=writer, every_steps=t.log_every)
    pair_index = input_pipeline.PairIndex.from_source(split.source, split.video_ids, split.frame_indices)
    samples_dir = os.path.join(workdir, "samples")
    last_metrics: dict = {}
    step = start
    with _Preemption() as preemption, \
            input_pipeline.make_train_iterator(split.source, global_batch_size=t.batch_size, height=t.height,
                                               width=t.width, seed=t.seed, mesh=mesh, start_step=start,
                                               pair_index=pair_index) as batches, \
            progress.Progress(t.num_steps - start, f"training ({dataset_dir})", unit="steps") as bar:
        while step < t.num_steps:
            _, batch = next(batches)
            state, metrics = trainer.step(state, batch)
            step += 1
            bar.update()
            report(step)
            if step % t.log_every == 0 or step == t.num_steps:
                last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if last_metrics.pop("nonfinite") > 0 or not all(np.isfinite(list(last_metrics.values()))):
                    checkpoints.wait()
                    raise EdnError(
                        f"training diverged: a loss or gradient became NaN/Inf by step {step}; the last good "
                        f"checkpoint (step {checkpoints.latest_step()}) is kept in {checkpoints.directory}",
                        "lower train.learning_rate or use model.dtype=float32, then resume")
                last_metrics["learning_rate"] = float(trainer.lr_schedule(step))
                writer.write_scalars(step, last_metrics)
            if step % t.sample_every == 0 or step == t.num_steps:
                _, fake = trainer.sample_fn(state.g_params, batch["label_prev"], batch["label"])
                n = min(4, t.batch_size)
                grid = _image_grid(*(np.asarray(jax.device_get(x))[:n] for x in (batch["label"], fake, batch["image"])))
                writer.write_images(step, {"samples/stick_generated_real": grid[None]})
                if jax.process_index() == 0:
                    _write_png(os.path.join(samples_dir, f"step_{step:08d}.png"), grid)
            if step % t.checkpoint_every == 0 or step == t.num_steps or preemption.requested:
                checkpoints.save(step, state, {"step": step}, force=True)
            if preemption.requested:
                checkpoints.wait()
                print(f"SIGTERM: saved a checkpoint at step {step}; rerun the same command to resume")
                break
    checkpoints.wait()
    checkpoints.close()
    summary = {"step": int(step), "metrics": last_metrics, "dataset": dataset_dir,
               "checkpoints": checkpoints.directory, "samples": samples_dir}
    if step >= t.num_steps and config.train.evaluate_holdout:
        evaluation = evaluate_holdout(config, trainer, state.g_params, dataset_dir)
        grid = evaluation.pop("grid")
        writer.write_scalars(step, {f"holdout/{k}": v for k, v in evaluation.items()})
        writer.write_images(step, {"holdout/stick_generated_real": grid[None]})
        if jax.process_index() == 0:
            _write_png(os.path.join(workdir, "holdout_samples.png"), grid)
        summary["holdout"] = evaluation
        print(f"held-out SSIM ({evaluation['holdout_frames']} frames), generated vs mean training frame: "
              f"whole frame {evaluation['ssim_generated']:.3f} vs {evaluation['ssim_mean_train_frame']:.3f}, "
              f"body crop {evaluation['body_ssim_generated']:.3f} vs {evaluation['body_ssim_mean_train_frame']:.3f}")
    writer.flush()
    if jax.process_index() == 0:
        from edn_jax.fileio import atomic_path

        with atomic_path(os.path.join(workdir, "train_summary.json")) as tmp, open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
    return dict(summary, state=state, trainer=trainer)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
