"""Training batches of temporal pairs (frame t-1, frame t), sharded over processes and devices.

Which temporal pairs form global batch ``step`` is ``edn_jax.data.pair_schedule``'s pure function of
(seed, step, pairs, global batch size), so a run resumed at step k sees exactly the batches an
uninterrupted run sees, and the iterator state is just the next step. Each process loads only
its contiguous rows of the global batch, so the global batch is the same whatever the number of
processes.

A source is any random-access split (``len`` and ``source[i] -> dict``), e.g. a
``tfds.data_source`` or a list of dicts; records carry ``frame`` (uint8 [H, W, 3] RGB),
``keypoints`` (float32 [137, 3], pixels of ``frame``), ``frame_index``, ``video_id``,
``face_box`` (float32 [4] x0, y0, x1, y1) and ``face_valid``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import queue
import threading
import weakref

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from edn_jax.data import limb_warp
from edn_jax.data import augment as augment_lib
from edn_jax.data.batch import Batch
from edn_jax.data.pair_schedule import BatchSchedule, PairIndex, Source, check_processes, non_negative_int
from edn_jax.data.records import fit_face_box, fit_record
from edn_jax.errors import EdnError
from edn_jax.pose import layout, render

_FIX_DATASET = "rebuild the dataset with edn_jax's dataset builder"
_worker = threading.local()  # set on the pipeline's own threads, which must never join the producer


def _mark_worker() -> None:
    _worker.active = True


# --------------------------------------------------------------------------- host batches


def _to_unit_range(image: np.ndarray, out: np.ndarray) -> None:
    """uint8 [0, 255] -> float32 [-1, 1], written into ``out``."""
    np.divide(image, np.float32(127.5), out=out, dtype=np.float32)
    out -= 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class PipelineOptions:
    """What a stage's batches hold and how they are loaded: ``global_batch_size`` pairs at
    ``height`` x ``width``, in an order drawn from ``seed``.

    ``augment`` moves each pair (frames, keypoints, redrawn stick figures, face boxes) by one random
    transform (``edn_jax.data.augment``). ``background``, a uint8 plate [height, width, 3], fills
    ``Batch.background``: the plate moved as each pair was. ``exemplars``, int [records, M]
    (``exemplar.training_candidates``), fills ``Batch.exemplar_prev``/``exemplar``: for each frame
    one of its M candidate records at random, its frame and stick figure, moved as the pair was;
    with ``exemplar_warp="limbs"`` then moved limb by limb into its frame's pose
    (``limb_warp.warped``), fading to the moved plate (and no figure) away from that pose when there
    is a ``background``. ``prefetch`` host batches are built ahead on a thread, from records loaded
    by ``num_threads`` threads (None: the CPU count, at most 16); ``device_prefetch`` global
    batches are transferred ahead of the one returned.
    """

    global_batch_size: int
    height: int
    width: int
    seed: int
    conf_threshold: float = 0.05
    augment: augment_lib.Augment | None = None
    background: np.ndarray | None = None
    exemplars: np.ndarray | None = None
    exemplar_warp: str = "none"
    prefetch: int = 2
    device_prefetch: int = 1
    num_threads: int | None = None

    def __post_init__(self):
        if int(self.height) < 1 or int(self.width) < 1:
            raise EdnError(f"output size must be positive, got {self.height}x{self.width}",
                           "pass a height and width >= 1")
        if self.prefetch < 1:
            raise EdnError(f"prefetch must be at least 1, got {self.prefetch}", "pass prefetch=2")
        if self.num_threads is not None and self.num_threads < 1:
            raise EdnError(f"num_threads must be at least 1, got {self.num_threads}",
                           "leave it unset for the CPU count")
        if self.device_prefetch < 0:
            raise EdnError(f"device_prefetch must be >= 0, got {self.device_prefetch}", "pass device_prefetch=1")

    @classmethod
    def for_stage(cls, config, stage, background: np.ndarray | None = None,
                  exemplars: np.ndarray | None = None) -> PipelineOptions:
        """A training stage's batches: ``train``'s batch size, augmentation and seed (one seed per
        stage), the stage's frame size, and the model's plate and exemplars when it reads them."""
        t = config.train
        return cls(t.batch_size, stage.height, stage.width, t.seed + stage.number - 1,
                   augment=augment_lib.Augment.from_config(t.augment), background=background, exemplars=exemplars,
                   exemplar_warp=config.model.exemplar_warp)


class _BatchBuilder:
    """Builds one host batch: this process's pairs of a global batch, loaded, fit and rendered.

    Holds no reference to the iterator that owns it, so that iterator can be collected
    (which stops the thread running this builder).
    """

    def __init__(self, source: Source, index: PairIndex, schedule: BatchSchedule, options: PipelineOptions,
                 process_index: int, process_count: int, num_threads: int):
        o = options
        self.source, self.index, self.schedule = source, index, schedule
        self.exemplars = None if o.exemplars is None else np.asarray(o.exemplars)
        self.exemplar_warp = o.exemplar_warp
        self.height, self.width = int(o.height), int(o.width)
        self.process_index, self.process_count = process_index, process_count
        self.conf_threshold = float(o.conf_threshold)
        self.augment = o.augment if o.augment is not None and o.augment.enabled else None
        self.background = None if o.background is None else np.ascontiguousarray(o.background, np.uint8)
        self.pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="edn-records",
                                                          initializer=_mark_worker)

    def __call__(self, step: int) -> Batch:
        pair_ids = self.schedule.local_batch(step, self.process_index, self.process_count)
        b, h, w = len(pair_ids), self.height, self.width
        out = {"frame_index": np.empty((b, 2), np.int32), "video_id": np.empty((b, 2), np.int32)}
        for suffix in ("_prev", ""):
            out["face_box" + suffix] = np.empty((b, 4), np.float32)
            out["face_valid" + suffix] = np.empty(b, bool)
            out["label" + suffix] = np.empty((b, h, w, 3), np.float32)
            out["image" + suffix] = np.empty((b, h, w, 3), np.float32)
            out["keypoints" + suffix] = np.empty((b, layout.NUM_KEYPOINTS, 3), np.float32)
        records = self.index.pairs[pair_ids]
        moves = [self._move(step, row) for row in range(b)]
        plates = None  # each row's plate, moved as its pair was (uint8; the warped exemplars fade to it)
        if self.background is not None:
            plates = [self.background if move is None else augment_lib.warp_image(self.background, move[0])
                      for move in moves]
            out["background"] = np.empty((b, h, w, 3), np.float32)
            for row, plate in enumerate(plates):
                _to_unit_range(plate, out["background"][row])
        # cv2 releases the GIL, so records load in parallel; each writes only its own slot.
        list(self.pool.map(lambda slot: self._load(out, slot // 2, slot % 2, int(records.flat[slot]),
                                                   moves[slot // 2]), range(2 * b)))
        if self.exemplars is not None:
            picks = [self._exemplar_picks(step, row, records[row]) for row in range(b)]
            for suffix in ("_prev", ""):
                out["exemplar" + suffix] = np.empty((b, h, w, 6), np.float32)  # frame | stick figure
            list(self.pool.map(lambda slot: self._load_exemplar(
                out, slot // 2, slot % 2, picks[slot // 2][slot % 2], moves[slot // 2],
                None if plates is None else plates[slot // 2]), range(2 * b)))
        return Batch(**out)

    def _global_row(self, row: int) -> int:
        return self.process_index * (self.schedule.global_batch_size // self.process_count) + row

    def _exemplar_picks(self, step: int, row: int, pair) -> tuple[int, int]:
        """The exemplar records of a row's frames t-1 and t: one of each frame's candidates, at
        random, a pure function of (seed, step, the row's place in the global batch)."""
        rng = np.random.default_rng([self.schedule.seed, step, self._global_row(row), 2])
        choice = rng.integers(0, self.exemplars.shape[1], size=2)
        return int(self.exemplars[int(pair[0]), choice[0]]), int(self.exemplars[int(pair[1]), choice[1]])

    def _load_exemplar(self, out: dict[str, np.ndarray], row: int, t: int, record_index: int, move=None,
                       plate: np.ndarray | None = None) -> None:
        frame, kps, label, _, _ = self._fitted(record_index, move)
        suffix = "_prev" if t == 0 else ""
        # With the row's (moved) plate, the warped exemplar fades to it (and no figure) away from the pose.
        fill = (None if plate is None or self.exemplar_warp == "none"
                else np.concatenate([plate, np.zeros_like(plate)], axis=-1))
        channels = limb_warp.warped(np.concatenate([frame, label], axis=-1), kps, out["keypoints" + suffix][row],
                                    self.exemplar_warp, fill)
        target = out["exemplar" + suffix][row]
        _to_unit_range(channels[..., :3], target[..., :3])
        _to_unit_range(channels[..., 3:], target[..., 3:])

    def _move(self, step: int, row: int):
        """(affine matrix, flip) of a row's pair, or None without augmentation: a pure function of
        (seed, step, the row's place in the global batch), shared by both frames of the pair."""
        if self.augment is None:
            return None
        params = self.augment.sample(np.random.default_rng([self.schedule.seed, step, self._global_row(row), 1]))
        return augment_lib.matrix(params, self.height, self.width), params["flip"]

    def _load(self, out: dict[str, np.ndarray], row: int, t: int, record_index: int, move=None) -> None:
        frame, kps, label, box, valid = self._fitted(record_index, move, check_pairing=True)
        suffix = "_prev" if t == 0 else ""
        _to_unit_range(frame, out["image" + suffix][row])
        _to_unit_range(label, out["label" + suffix][row])
        out["keypoints" + suffix][row] = kps
        out["video_id"][row, t] = int(self.index.video_ids[record_index])
        out["frame_index"][row, t] = int(self.index.frame_indices[record_index])
        out["face_box" + suffix][row], out["face_valid" + suffix][row] = box, valid

    def _fitted(self, record_index: int, move=None, check_pairing: bool = False):
        """(frame uint8, keypoints, stick figure uint8, face box, face valid) of a record at the
        output size, moved by ``move``; checked against the pair index with ``check_pairing``."""
        record = self.source[record_index]
        frame = np.asarray(record["frame"])
        kps = np.asarray(record["keypoints"], np.float32)
        video_id, frame_index = int(record["video_id"]), int(record["frame_index"])
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise EdnError(f"record {record_index}: frame is {frame.dtype} {frame.shape}, expected uint8 "
                           "[H, W, 3] RGB", _FIX_DATASET)
        if kps.shape != (layout.NUM_KEYPOINTS, 3):
            raise EdnError(f"record {record_index}: keypoints have shape {kps.shape}, expected "
                           f"({layout.NUM_KEYPOINTS}, 3)", _FIX_DATASET)
        expected = (int(self.index.video_ids[record_index]), int(self.index.frame_indices[record_index]))
        if check_pairing and (video_id, frame_index) != expected:  # a stale index would pair unrelated frames
            raise EdnError(f"record {record_index} is frame {frame_index} of video {video_id} but the pair index "
                           f"says frame {expected[1]} of video {expected[0]}",
                           "build the pair index from this split's own metadata")
        frame, kps, label, tf = fit_record(frame, kps, self.height, self.width, self.conf_threshold)
        box, valid = fit_face_box(record, tf)
        if move is not None:
            m, flip = move
            frame, kps = augment_lib.warp_image(frame, m), augment_lib.warp_keypoints(kps, m, flip)
            label = render.render_stick_figure(kps, self.height, self.width, self.conf_threshold)
            box, valid = augment_lib.warp_box(box, valid, m, self.height, self.width)
        return frame, kps, label, box, valid


class _Failure:
    """An exception raised while producing, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


def _produce(build: _BatchBuilder, step: int, out: queue.Queue, stop: threading.Event) -> None:
    _mark_worker()
    try:
        while not stop.is_set():
            _put(out, (step, build(step)), stop)
            step += 1
    except BaseException as e:  # noqa: BLE001 - re-raised by the consumer
        _put(out, _Failure(e), stop)


def _shutdown(stop: threading.Event, out: queue.Queue, thread: threading.Thread,
              pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """Stop the producer (it finishes at most its current batch) and free what it queued."""
    stop.set()
    # Garbage collection may run this on the producer or a pool thread it waits for;
    # joining there would deadlock, and the producer stops by itself on ``stop``.
    if not getattr(_worker, "active", False):
        thread.join()
    while True:
        try:
            out.get_nowait()
        except queue.Empty:
            break
    pool.shutdown(wait=False, cancel_futures=True)  # may be running on a pool thread: don't join it


class HostBatchIterator:
    """(step, host batch) from ``start_step`` on, built ``prefetch`` batches ahead on a thread.

    ``state()`` is the next step this iterator will return (not the producer's), so a
    checkpointed state resumes exactly after the last batch consumed. ``close()`` (also
    run on garbage collection and at exit) stops the thread.
    """

    def __init__(self, builder: _BatchBuilder, start_step: int, prefetch: int):
        self.steps_per_epoch = builder.schedule.steps_per_epoch
        self._next_step = start_step
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        thread = threading.Thread(target=_produce, args=(builder, start_step, self._queue, self._stop),
                                  name="edn-host-batches", daemon=True)
        thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, thread, builder.pool)

    def __iter__(self) -> HostBatchIterator:
        return self

    def __next__(self) -> tuple[int, Batch]:
        if self._error is not None:
            raise self._error
        while True:
            if self._stop.is_set():
                raise StopIteration
            try:
                item = self._queue.get(timeout=0.05)
                break
            except queue.Empty:
                pass
        if isinstance(item, _Failure):
            self._error = item.error
            raise item.error
        step, batch = item
        self._next_step = step + 1
        return step, batch

    def state(self) -> dict[str, int]:
        return {"step": self._next_step}

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> HostBatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def host_batches(source: Source, options: PipelineOptions, *, start_step: int = 0,
                 pair_index: PairIndex | None = None, process_index: int | None = None,
                 process_count: int | None = None) -> HostBatchIterator:
    """This process's numpy ``Batch``es of temporal pairs as ``options`` describes them, from
    ``start_step`` on, forever: global_batch_size / process_count pairs each (this process's rows
    of the global batch). The process defaults to JAX's; pass both to override (tests).
    """
    o = options
    if (process_index is None) != (process_count is None):
        raise EdnError("only one of process_index and process_count was given", "pass both, or neither")
    if process_index is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    num_threads = min(16, os.cpu_count() or 1) if o.num_threads is None else o.num_threads
    start_step = non_negative_int(start_step, "start_step")
    index = PairIndex.from_source(source) if pair_index is None else pair_index
    index.check_covers(source)
    schedule = BatchSchedule(len(index), o.global_batch_size, o.seed)
    check_processes(schedule.global_batch_size, int(process_index), int(process_count))
    if o.background is not None and np.shape(o.background) != (int(o.height), int(o.width), 3):
        raise EdnError(f"the background plate is {np.shape(o.background)}, not the output's "
                       f"({o.height}, {o.width}, 3)",
                       "compute it at the training size (edn_jax.conditioning.background.plate_from_split)")
    if o.exemplars is not None:
        exemplars = np.asarray(o.exemplars)
        if exemplars.ndim != 2 or len(exemplars) != len(source) or exemplars.shape[1] < 1 or (
                exemplars.size and not 0 <= exemplars.min() <= exemplars.max() < len(source)):
            raise EdnError(f"the exemplar table is {exemplars.shape}, not [{len(source)} records, candidates] of "
                           "this split's record indices", "build it with exemplar.training_candidates on this split")
    builder = _BatchBuilder(source, index, schedule, o, int(process_index), int(process_count), int(num_threads))
    return HostBatchIterator(builder, start_step, int(o.prefetch))


# --------------------------------------------------------------------------- global arrays


class TrainIterator:
    """(step, batch of global ``jax.Array``s sharded along the batch over the data axis).

    Keeps ``device_prefetch`` batches already transferred ahead of the one returned,
    so the host-to-device copy overlaps the training step. ``state()`` is the next step
    returned, as for ``HostBatchIterator``.
    """

    def __init__(self, host: HostBatchIterator, sharding, global_batch_size: int, device_prefetch: int):
        self.steps_per_epoch = host.steps_per_epoch
        self._host, self._sharding = host, sharding
        self._global_batch_size = global_batch_size
        self._device_prefetch = device_prefetch
        self._ahead: collections.deque = collections.deque()
        self._next_step = host.state()["step"]

    def _to_global(self, local: Batch) -> Batch:
        return jax.tree.map(lambda v: jax.make_array_from_process_local_data(
            self._sharding, v, (self._global_batch_size,) + v.shape[1:]), local)

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> tuple[int, Batch]:
        while len(self._ahead) <= self._device_prefetch:
            step, local = next(self._host)
            self._ahead.append((step, self._to_global(local)))
        step, batch = self._ahead.popleft()
        self._next_step = step + 1
        return step, batch

    def state(self) -> dict[str, int]:
        return {"step": self._next_step}

    def close(self) -> None:
        self._host.close()
        self._ahead.clear()

    def __enter__(self) -> TrainIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_train_iterator(source: Source, options: PipelineOptions, mesh, *, start_step: int = 0,
                        pair_index: PairIndex | None = None, data_axis: str = "data") -> TrainIterator:
    """Global training ``Batch``es on ``mesh``: ``host_batches`` of every process, joined.

    Each array is sharded along its batch axis over ``data_axis`` (replicated over the
    mesh's other axes). The global batch must split evenly over the processes and over
    the data axis, and each process's devices must hold its own rows (a mesh from
    ``jax.make_mesh`` does).
    """
    if data_axis not in mesh.axis_names:
        raise EdnError(f"the mesh has no axis {data_axis!r} (axes: {', '.join(mesh.axis_names)})",
                       "pass data_axis= one of the mesh's axis names")
    global_batch_size = options.global_batch_size
    data_size = mesh.shape[data_axis]
    if global_batch_size % data_size:
        raise EdnError(f"global batch size {global_batch_size} is not divisible by the {data_size} devices "
                       f"of mesh axis {data_axis!r}", f"use a multiple of {data_size}")
    process_index, process_count = jax.process_index(), jax.process_count()
    check_processes(global_batch_size, process_index, process_count)
    sharding = NamedSharding(mesh, PartitionSpec(data_axis))
    rows = global_batch_size // process_count
    held = set()
    for (index,) in sharding.addressable_devices_indices_map((global_batch_size,)).values():
        held.update(range(*index.indices(global_batch_size)))
    if held != set(range(process_index * rows, (process_index + 1) * rows)):
        raise EdnError(f"process {process_index}'s devices do not hold rows [{process_index * rows}, "
                       f"{(process_index + 1) * rows}) of the batch along mesh axis {data_axis!r}",
                       "build the mesh with jax.make_mesh so each process's devices are contiguous on the data axis")
    host = host_batches(source, options, start_step=start_step, pair_index=pair_index, process_index=process_index,
                        process_count=process_count)
    return TrainIterator(host, sharding, global_batch_size, int(options.device_prefetch))
