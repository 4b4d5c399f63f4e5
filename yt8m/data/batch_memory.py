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
has not: `Buffer.clear_stale` does that row by row. A batch's frames, labels and frame
counts lie in one block, so that it crosses from a worker as one file descriptor.

Pinned memory (when the batches go to a CUDA device): the blocks themselves are page-locked
once, so that a batch is copied to the device straight from them, without blocking the host
and without the extra pinned copy of each batch the DataLoader would make. In process the
pool's blocks are allocated pinned (``LocalBuffers(pin=True)``). A worker cannot pin memory
for the main process, so the main process registers each pooled block it receives with CUDA
(`PinnedBlocks`, once per block: it keeps the block mapped, holding one reference to it,
which `ReleaseFlags` discounts when it decides whether a block is still in use).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

POOL_SIZE = 6  # buffers per reader: batches a consumer holds, and those in flight


@dataclass
class Buffer:
    """One batch's memory, one block holding three arrays (numpy and torch views of it):
    ``inputs`` (``[B, T, D]`` uint8 or ``[B, D]`` float32), ``labels`` ``[B, C]`` bool
    (all False when taken) and ``num_frames`` ``[B]`` int64. ``filled[i]``: how many rows
    of entry i may still hold an earlier batch's frames."""

    arrays: tuple[np.ndarray, np.ndarray, np.ndarray]  # inputs, labels, num_frames
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    filled: np.ndarray  # int64 [B]
    place: tuple[int, int] | None = None  # (worker, slot) in a worker's pool

    def clear_stale(self, row: int, num_frames: int) -> None:
        """Zero the rows of entry `row` after `num_frames` that an earlier batch wrote,
        and remember `num_frames` for the next reuse."""
        if self.filled[row] > num_frames:
            self.arrays[0][row, num_frames : self.filled[row]] = 0
        self.filled[row] = num_frames


@dataclass(frozen=True)
class Layout:
    """Where the three arrays of a batch lie in its block of bytes."""

    inputs_shape: tuple[int, ...]
    inputs_dtype: torch.dtype
    num_classes: int

    @property
    def batch(self) -> int:
        return self.inputs_shape[0]

    @property
    def labels_offset(self) -> int:
        return -(-math.prod(self.inputs_shape) * self.inputs_dtype.itemsize // 64) * 64

    @property
    def num_frames_offset(self) -> int:
        return -(-(self.labels_offset + self.batch * self.num_classes) // 8) * 8

    @property
    def nbytes(self) -> int:
        return self.num_frames_offset + 8 * self.batch

    def views(self, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three tensors over `block` (uint8 ``[nbytes]``)."""
        inputs_end = math.prod(self.inputs_shape) * self.inputs_dtype.itemsize
        labels_end = self.labels_offset + self.batch * self.num_classes
        return (
            block[:inputs_end].view(self.inputs_dtype).view(self.inputs_shape),
            block[self.labels_offset : labels_end].view(torch.bool).view(self.batch, -1),
            block[self.num_frames_offset :].view(torch.int64),
        )


def _zeroed_block(nbytes: int) -> np.ndarray:
    return np.zeros(nbytes, np.uint8)


def _buffer(block: torch.Tensor, layout: Layout, filled: np.ndarray) -> Buffer:
    tensors = layout.views(block)
    buffer = Buffer(tuple(t.numpy() for t in tensors), tensors, filled)
    buffer.arrays[1][:] = False
    return buffer


def _only_pooled(pool: list[tuple[np.ndarray, np.ndarray]], i: int) -> bool:
    """Whether `pool` holds the only reference to the block of entry `i`."""
    return sys.getrefcount(pool[i][0]) <= _POOLED_ONLY


def _count_when_only_pooled() -> int:
    """What getrefcount says of an array that only a pool entry holds, on this interpreter."""
    probe = [(np.zeros(0), np.zeros(0))]
    return sys.getrefcount(probe[0][0])


_POOLED_ONLY = _count_when_only_pooled()


def pinned_block(nbytes: int) -> np.ndarray:
    """`nbytes` zeroed bytes of page-locked memory (CUDA's host allocator)."""
    return torch.zeros(nbytes, dtype=torch.uint8, pin_memory=True).numpy()


class LocalBuffers:
    """Batch memory of an in-process reader (fresh memory reads as zeros); pinned blocks
    with `pin` (`allocate`: how a zeroed block of n bytes is made)."""

    def __init__(
        self, pin: bool = False, allocate: Callable[[int], np.ndarray] | None = None
    ) -> None:
        self._pool: list[tuple[np.ndarray, np.ndarray]] = []  # (block, filled)
        self._allocate = allocate or (pinned_block if pin else _zeroed_block)

    def take(self, layout: Layout) -> Buffer:
        """A buffer that nobody holds. Its tensors are new views of the block, so that
        they and every view of them keep the block referenced while they live."""
        for i in range(len(self._pool)):
            if self._pool[i][0].size == layout.nbytes and _only_pooled(self._pool, i):
                block, filled = self._pool[i]
                return _buffer(torch.from_numpy(block), layout, filled)
        block = self._allocate(layout.nbytes)
        filled = np.zeros(layout.batch, np.int64)
        if len(self._pool) < POOL_SIZE:
            self._pool.append((block, filled))
        return _buffer(torch.from_numpy(block), layout, filled)


def _use_count(ref: StorageWeakRef) -> int:
    """References to the storage `ref` points at (tensors, storage objects), 0 once freed."""
    return torch._C._storage_Use_Count(ref.cdata)


def cuda_register(pointer: int, nbytes: int) -> None:
    """Page-lock host memory for CUDA (cudaHostRegister)."""
    status = int(torch.cuda.cudart().cudaHostRegister(pointer, nbytes, 0))
    if status != 0:
        raise RuntimeError(f"cudaHostRegister of {nbytes} bytes failed with CUDA error {status}")


def cuda_unregister(pointer: int) -> None:
    """Undo `cuda_register`, once no copy from the memory is pending."""
    status = int(torch.cuda.cudart().cudaHostUnregister(pointer))
    if status != 0:
        raise RuntimeError(f"cudaHostUnregister failed with CUDA error {status}")


class PinnedBlocks:
    """The workers' pooled blocks as the main process receives them, page-locked once each.

    `keep` registers a block the first time it arrives and keeps one reference to it, so
    that the next batch from the same pooled block arrives in the same, still registered,
    mapping. `close` waits for pending device work (copies may still read the blocks), then
    unregisters and lets them go. `register`/`unregister` default to CUDA's.
    """

    def __init__(
        self,
        register: Callable[[int, int], None] | None = None,
        unregister: Callable[[int], None] | None = None,
        wait: Callable[[], None] | None = None,
    ) -> None:
        self._register = register or cuda_register
        self._unregister = unregister or cuda_unregister
        self._wait = wait or torch.cuda.synchronize
        self._blocks: dict[tuple[int, int], torch.UntypedStorage] = {}

    def keep(self, storage: torch.UntypedStorage, place: tuple[int, int]) -> None:
        """The main process received `storage` from the pooled block at `place`."""
        kept = self._blocks.get(place)
        if kept is not None and kept.data_ptr() == storage.data_ptr():
            return
        if kept is not None:  # not expected within a pass: a new block at the same place
            self._wait()
            self._unregister(kept.data_ptr())
        self._register(storage.data_ptr(), storage.nbytes())
        self._blocks[place] = storage

    def kept_references(self, ref: StorageWeakRef, place: tuple[int, int]) -> int:
        """1 when this registry holds the storage `ref` points at, else 0."""
        kept = self._blocks.get(place)
        return int(kept is not None and StorageWeakRef(kept) == ref)

    def close(self) -> None:
        if not self._blocks:
            return
        self._wait()
        for storage in self._blocks.values():
            self._unregister(storage.data_ptr())
        self._blocks.clear()


class ReleaseFlags:
    """Which workers' pooled buffers the main process still holds ([workers, POOL_SIZE]
    int8 in shared memory; the worker sets 1 when it sends, the main process clears).
    With `pinned`, received blocks are page-locked (`PinnedBlocks`)."""

    def __init__(self, workers: int, pinned: PinnedBlocks | None = None) -> None:
        self.flags = torch.zeros((workers, POOL_SIZE), dtype=torch.int8).share_memory_()
        self.pinned = pinned
        self._held: list[tuple[StorageWeakRef, int, int]] = []

    def reset(self) -> None:
        """A new pass: new worker processes, empty pools."""
        self.flags.zero_()
        self._held.clear()
        if self.pinned is not None:
            self.pinned.close()

    def hold(self, inputs: torch.Tensor, place: tuple[int, int]) -> None:
        """The main process received `inputs` from the pooled buffer at `place`."""
        storage = inputs.untyped_storage()
        worker, slot = place  # (the DataLoader hands a tuple over as a list)
        if self.pinned is not None:
            self.pinned.keep(storage, (worker, slot))
        self._held.append((StorageWeakRef(storage), worker, slot))

    def release_unused(self) -> None:
        """Clear the flag of every received buffer whose memory nobody here holds now
        (the registry of pinned blocks aside)."""
        still_held = []
        for ref, worker, slot in self._held:
            kept = 0 if self.pinned is None else self.pinned.kept_references(ref, (worker, slot))
            if _use_count(ref) <= kept:
                self.flags[worker, slot] = 0
            else:
                still_held.append((ref, worker, slot))
        self._held = still_held


class SharedBuffers:
    """Batch memory of a worker process: one shared-memory storage per batch (it reads
    as zeros), so that a batch crosses to the main process as one file descriptor."""

    def __init__(self, release: ReleaseFlags | None, worker: int) -> None:
        self._flags = None if release is None else release.flags[worker].numpy()
        self._worker = worker
        self._pool: list[tuple[torch.Tensor, np.ndarray]] = []  # (block, filled)

    def take(self, layout: Layout) -> Buffer:
        """A buffer: a pooled one the main process let go, or a new one."""
        in_use = self._flags
        if in_use is not None:
            for slot, (block, filled) in enumerate(self._pool):
                if block.numel() == layout.nbytes and not in_use[slot]:
                    in_use[slot] = 1
                    buffer = _buffer(block, layout, filled)
                    buffer.place = (self._worker, slot)
                    return buffer
        storage = torch.UntypedStorage._new_shared(layout.nbytes)
        block = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (layout.nbytes,))
        buffer = _buffer(block, layout, np.zeros(layout.batch, np.int64))
        if in_use is not None and len(self._pool) < POOL_SIZE:
            buffer.place = (self._worker, len(self._pool))
            in_use[len(self._pool)] = 1
            self._pool.append((block, buffer.filled))
        return buffer
