"""Which records form training batch ``step``: the temporal pairs of a split and their seeded order.

The generator's temporal smoothing trains on consecutive frames, so one example is two
records of one video whose ``frame_index`` differ by exactly 1. Which pairs form global
batch ``step`` is a pure function of (seed, step, pairs, global batch size): a run
resumed at step k sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np

from edn_jax.errors import EdnError

_FIX_DATASET = "rebuild the dataset with edn_jax's dataset builder"


class Source(Protocol):
    """A random-access split: ``len(source)`` records, ``source[i]`` -> record dict."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


# --------------------------------------------------------------------------- pairs


def temporal_pairs(video_ids, frame_indices) -> np.ndarray:
    """Record indices (prev, cur) of all consecutive frames of one video: int64 [N, 2].

    Records are matched by their fields, not their storage order; a missing frame
    (``frame_index`` jumps) breaks the chain, and videos never pair with each other.
    Pairs come sorted by (video_id, frame_index).
    """
    vid, frame = np.asarray(video_ids, np.int64), np.asarray(frame_indices, np.int64)
    if vid.ndim != 1 or vid.shape != frame.shape:
        raise EdnError(f"video_ids {vid.shape} and frame_indices {frame.shape} must be equal-length vectors",
                       "pass one video_id and one frame_index per record")
    order = np.lexsort((frame, vid))
    v, f = vid[order], frame[order]
    same_video = v[1:] == v[:-1]
    duplicate = same_video & (f[1:] == f[:-1])
    if duplicate.any():
        i = int(np.flatnonzero(duplicate)[0])
        raise EdnError(f"records {order[i]} and {order[i + 1]} are both frame {f[i]} of video {v[i]}",
                       f"remove the duplicate frame or {_FIX_DATASET}")
    consecutive = same_video & (f[1:] - f[:-1] == 1)
    return np.stack([order[:-1][consecutive], order[1:][consecutive]], axis=1)


class PairIndex:
    """Each record's (video_id, frame_index) and the temporal pairs among the records.

    Kept apart from the records so that the index of a big split comes from the
    dataset's metadata instead of decoding every frame.
    """

    def __init__(self, video_ids, frame_indices):
        self.pairs = temporal_pairs(video_ids, frame_indices)
        self.video_ids = np.asarray(video_ids, np.int64)
        self.frame_indices = np.asarray(frame_indices, np.int64)

    @classmethod
    def from_source(cls, source: Source, video_ids=None, frame_indices=None) -> PairIndex:
        """Index ``source``, from precomputed per-record arrays when given.

        Without them every record is read, frame included: fine for small in-memory
        sources, slow for big datasets (pass the arrays from the dataset metadata).
        """
        if (video_ids is None) != (frame_indices is None):
            raise EdnError("only one of video_ids and frame_indices was given", "pass both, or neither")
        if video_ids is None:
            records = [source[i] for i in range(len(source))]
            video_ids = [int(r["video_id"]) for r in records]
            frame_indices = [int(r["frame_index"]) for r in records]
        index = cls(video_ids, frame_indices)
        index.check_covers(source)
        return index

    def check_covers(self, source: Source) -> None:
        """Raise unless this index has one entry per record of ``source``."""
        if len(self.video_ids) != len(source):
            raise EdnError(f"the pair index describes {len(self.video_ids)} records but the source has "
                           f"{len(source)}", "build the index from this split's own metadata")

    def __len__(self) -> int:
        return len(self.pairs)


# --------------------------------------------------------------------------- schedule


def non_negative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise EdnError(f"{what} must be a non-negative integer, got {value!r}", f"pass e.g. {what}=0")
    return int(value)


class BatchSchedule:
    """Which pairs form global batch ``step``.

    Epoch ``step // steps_per_epoch`` visits the pairs in the order
    ``np.random.default_rng([seed, epoch]).permutation(num_pairs)`` and drops the
    remainder, so a batch depends on nothing but (seed, step, num_pairs, batch size).
    """

    def __init__(self, num_pairs: int, global_batch_size: int, seed: int):
        self.seed = non_negative_int(seed, "seed")
        self.num_pairs = int(num_pairs)
        self.global_batch_size = int(global_batch_size)
        if self.global_batch_size < 1:
            raise EdnError(f"global batch size must be at least 1, got {global_batch_size}",
                           "pass a positive global_batch_size")
        if self.num_pairs < self.global_batch_size:
            raise EdnError(f"the split has {self.num_pairs} temporal pairs, fewer than one global batch of "
                           f"{self.global_batch_size}", "use a smaller global batch or a longer video")
        self.steps_per_epoch = self.num_pairs // self.global_batch_size
        self._cached = (-1, np.empty(0, np.int64))  # (epoch, its permutation), swapped as one tuple

    def permutation(self, epoch: int) -> np.ndarray:
        cached_epoch, perm = self._cached
        if cached_epoch != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
            self._cached = (epoch, perm)
        return perm

    def global_batch(self, step: int) -> np.ndarray:
        """Pair ids of global batch ``step``: int64 [global_batch_size]."""
        epoch, k = divmod(non_negative_int(step, "step"), self.steps_per_epoch)
        b = self.global_batch_size
        return self.permutation(epoch)[k * b:(k + 1) * b]

    def local_batch(self, step: int, process_index: int, process_count: int) -> np.ndarray:
        """Rows [p*B/P, (p+1)*B/P) of global batch ``step``: process p's share."""
        rows = self.global_batch_size // process_count
        return self.global_batch(step)[process_index * rows:(process_index + 1) * rows]


def check_processes(global_batch_size: int, process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise EdnError(f"process index {process_index} is outside [0, {process_count})",
                       "pass 0 <= process_index < process_count")
    if global_batch_size % process_count:
        raise EdnError(f"global batch size {global_batch_size} is not divisible by the {process_count} "
                       "processes", f"use a multiple of {process_count}")
