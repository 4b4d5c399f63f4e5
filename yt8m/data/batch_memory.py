"""Memory for batches, reused once nobody holds it.

A fresh batch costs page faults on its first write (a 64 x 300 x 1152 uint8 batch spans
about 5,400 pages); in a worker process, a new shared-memory segment per batch also costs
its creation and mapping: together about twice the decoding itself. So each reader keeps
a few buffers and hands one out again only when it is certainly free:

- in process (`LocalBuffers`): when the pool holds the only reference to the buffer's
  array (the tensor given out, and every view of it, keep the array alive);
- in a worker (`SharedBuffers`): the buffers are shared-memory storages and the main
  process says which ones it no longer holds, through a small shared array of flags
  (`ReleaseFlags`, one row per worker, one flag per buffer; 1 = in use).

A reused buffer only needs zeros where its previous batch had frames that the new one
has not: `Buffer.clear_stale` does that row by row.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

POOL_SIZE = 6  # buffers per reader: batches a consumer holds, and those in flight


@dataclass
class Buffer:
    """One batch's memory: `tensor` and `array` share it. `filled[i]`: how many rows of
    entry i may hold an earlier batch's frames (frame-level batches)."""

    tensor: torch.Tensor
    array: np.ndarray
    filled: np.ndarray  # int64 [batch]
    place: tuple[int, int] | None = None  # (worker, slot) in a worker's pool

    def clear_stale(self, row: int, num_frames: int) -> None:
        """Zero the rows of entry `row` after `num_frames` that an earlier batch wrote,
        and remember `num_frames` for the next reuse."""
        if self.filled[row] > num_frames:
            self.array[row, num_frames : self.filled[row]] = 0
        self.filled[row] = num_frames


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _only_pooled(pool: list[tuple[np.ndarray, np.ndarray]], i: int) -> bool:
    """Whether `pool` holds the only reference to the array of entry `i`."""
    return sys.getrefcount(pool[i][0]) <= _POOLED_ONLY


def _count_when_only_pooled() -> int:
    """What getrefcount says of an array that only a pool entry holds, on this interpreter."""
    probe = [(np.zeros(0), np.zeros(0))]
    return sys.getrefcount(probe[0][0])


_POOLED_ONLY = _count_when_only_pooled()


class LocalBuffers:
    """Batch memory of an in-process reader (fresh memory reads as zeros)."""

    def __init__(self) -> None:
        self._pool: list[tuple[np.ndarray, np.ndarray]] = []  # (array, filled)

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> Buffer:
        """A buffer of `shape` that nobody holds; its tensor is new, so that it and every
        view of it keep the array referenced while they live."""
        for i in range(len(self._pool)):
            if self._pool[i][0].shape == shape and _only_pooled(self._pool, i):
                array, filled = self._pool[i]
                return Buffer(torch.from_numpy(array), array, filled)
        array = np.zeros(shape, _numpy_dtype(dtype))
        filled = np.zeros(shape[0], np.int64)
        if len(self._pool) < POOL_SIZE:
            self._pool.append((array, filled))
        return Buffer(torch.from_numpy(array), array, filled)


class ReleaseFlags:
    """Which workers' pooled buffers the main process still holds ([workers, POOL_SIZE]
    int8 in shared memory; the worker sets 1 when it sends, the main process clears)."""

    def __init__(self, workers: int) -> None:
        self.flags = torch.zeros((workers, POOL_SIZE), dtype=torch.int8).share_memory_()
        self._held: list[tuple[StorageWeakRef, int, int]] = []

    def reset(self) -> None:
        """A new pass: new worker processes, empty pools."""
        self.flags.zero_()
        self._held.clear()

    def hold(self, inputs: torch.Tensor, place: tuple[int, int]) -> None:
        """The main process received `inputs` from the pooled buffer at `place`."""
        self._held.append((StorageWeakRef(inputs.untyped_storage()), *place))

    def release_unused(self) -> None:
        """Clear the flag of every received buffer whose memory nobody here holds now."""
        still_held = []
        for ref, worker, slot in self._held:
            if ref.expired():
                self.flags[worker, slot] = 0
            else:
                still_held.append((ref, worker, slot))
        self._held = still_held


class SharedBuffers:
    """Batch memory of a worker process: shared-memory storages (they read as zeros)."""

    def __init__(self, release: ReleaseFlags | None, worker: int) -> None:
        self._flags = None if release is None else release.flags[worker].numpy()
        self._worker = worker
        self._pool: list[Buffer] = []

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> Buffer:
        """A buffer of `shape`: a pooled one the main process let go, or a new one."""
        in_use = self._flags
        if in_use is not None:
            for buffer in self._pool:
                if buffer.array.shape == shape and not in_use[buffer.place[1]]:
                    in_use[buffer.place[1]] = 1
                    return buffer
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
        tensor = torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        buffer = Buffer(tensor, tensor.numpy(), np.zeros(shape[0], np.int64))
        if in_use is not None and len(self._pool) < POOL_SIZE:
            buffer.place = (self._worker, len(self._pool))
            in_use[buffer.place[1]] = 1
            self._pool.append(buffer)
        return buffer
