"""Batches of YouTube-8M records for training and evaluation (a torch IterableDataset).

Each worker process reads its own share of the files, decodes records straight into a
batch and hands over one ready batch at a time (one IPC per batch); frames stay uint8.

Who reads what. The files (sorted; in training shuffled anew every epoch with
``(seed, epoch)``) are split over ranks, then over the workers of a rank:
``files[rank::world_size][worker::workers]``. When there are fewer files than
``world_size * workers`` every reader reads every file and keeps record ``j`` of file ``k``
when ``(j + k) % readers`` is its own number, so nobody idles and nothing is read twice.
Evaluation therefore sees every record exactly once across all ranks and workers.

Order. A reader's records pass through a shuffle buffer in training (seeded by
``(seed, rank, worker)``) and are cut into batches, the last partial batch kept. The
DataLoader takes batches from its workers in turn (worker 0, 1, ..., skipping workers that
are done), so the sequence of batches is a function of the seed alone. Resuming at
``start_batch=k`` replays that schedule from the files' record counts: each reader skips
exactly the batches it contributed to the first k (reading their records without decoding
them), and the readers are rotated so that DataLoader worker 0 is the one whose turn is next.
The same record counts tell how many batches a rank will get (`BatchLoader.batch_count`).

Pinned memory (``pin_memory=True``, for a CUDA device): the batch blocks themselves are
page-locked (`batch_memory`), so the DataLoader makes no pinned copy of its own.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from yt8m.data.batch_memory import (
    Buffer,
    Layout,
    LocalBuffers,
    PinnedBlocks,
    ReleaseFlags,
    SharedBuffers,
)
from yt8m.data.records import (
    BatchSegments,
    FrameRecord,
    VideoRecord,
    parse_frame_record,
    parse_video_record,
)
from yt8m.data.tfrecord import (
    CorruptRecordError,
    Payload,
    ReadStats,
    count_records,
    expand_pattern,
    read_record_views,
)
from yt8m.errors import YT8MError
from yt8m.flags import FlagError, Flags
from yt8m.stopping import ignore_stop_signals

FRAME_SHUFFLE_BUFFER = 1024  # records (~200 KB each)
VIDEO_SHUFFLE_BUFFER = 8192  # records (~5 KB each)

_BUFFER_KEY = "_buffer"  # where a worker's batch came from; BatchLoader removes it
Source = tuple[Payload, str, int]  # payload, file, record index in the file


@dataclass(frozen=True)
class ReadPlan:
    """Everything a reader needs (picklable; the same object in every worker)."""

    files: tuple[str, ...]
    features: tuple[tuple[str, int], ...]
    frame_level: bool
    max_frames: int
    num_classes: int
    batch_size: int
    training: bool
    epochs: int
    seed: int
    rank: int
    world_size: int
    workers: int
    skip_corrupt: bool
    shuffle_buffer: int
    skip_batches: tuple[int, ...]  # per worker: batches to pass over (resume)
    first_worker: int = 0  # the reader whose turn it is first (DataLoader worker 0 plays it)
    pin_memory: bool = False  # page-locked batch blocks (for copies to a CUDA device)
    with_segments: bool = False  # batches carry each video's 2019 segment ratings

    def epoch_files(self, epoch: int) -> list[str]:
        if not self.training:
            return list(self.files)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.files))
        return [self.files[i] for i in order]

    def shares(self, epoch: int, worker: int) -> list[tuple[str, int, int]]:
        """``(file, record offset, stride)`` this reader takes in `epoch`: records ``j``
        with ``(j + offset) % stride == 0``."""
        files = self.epoch_files(epoch)
        readers = self.world_size * self.workers
        if len(files) >= readers:
            return [(f, 0, 1) for f in files[self.rank :: self.world_size][worker :: self.workers]]
        reader = self.rank * self.workers + worker
        return [(f, k - reader, readers) for k, f in enumerate(files)]

    def batch_count(self, worker: int, counts: dict[str, int]) -> int:
        """Batches `worker` makes over all epochs, from the files' record counts."""
        records = 0
        for epoch in range(self.epochs):
            for path, offset, stride in self.shares(epoch, worker):
                if path not in counts:
                    counts[path] = _record_count(path, self.skip_corrupt)
                records += len(range((-offset) % stride, counts[path], stride))
        return math.ceil(records / self.batch_size)


def _record_count(path: str, skip_corrupt: bool) -> int:
    """Records of `path`, from its length fields; with `skip_corrupt`, in a file whose length
    fields are damaged, the records the reader will yield (it stops at the damage)."""
    try:
        return count_records(path)
    except CorruptRecordError:
        if not skip_corrupt:
            raise
        return sum(1 for _ in read_record_views(path, True, ReadStats()))


def _round_robin_resume(batch_counts: list[int], start_batch: int) -> tuple[tuple[int, ...], int]:
    """Where the DataLoader's round-robin order (workers taken in turn, finished ones
    skipped) stands after `start_batch` batches: the batches each worker has contributed,
    and the worker whose turn is next."""
    skips = [0] * len(batch_counts)
    remaining, done_rounds = start_batch, 0
    while remaining > 0:
        active = [w for w, n in enumerate(batch_counts) if n > done_rounds]
        if not active:
            break
        rounds = min(batch_counts[w] for w in active) - done_rounds
        full = min(rounds, remaining // len(active))
        for w in active:
            skips[w] += full
        remaining -= full * len(active)
        done_rounds += full
        if full < rounds:
            for w in active[:remaining]:
                skips[w] += 1
            break
    pending = [w for w, n in enumerate(batch_counts) if skips[w] < n]
    lowest = min((skips[w] for w in pending), default=0)
    return tuple(skips), next((w for w in pending if skips[w] == lowest), 0)


def _shuffled(items: Iterator[Source], size: int, rng: np.random.Generator) -> Iterator[Source]:
    buffer: list[Source] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


class RecordBatches(IterableDataset):
    """Yields ready batches (see `make_loader`) of this worker's share of the records."""

    def __init__(self, plan: ReadPlan, release: ReleaseFlags | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.release = release  # workers' pooled buffers the main process let go

    def _sources(self, worker: int, stats: ReadStats) -> Iterator[Source]:
        plan = self.plan
        for epoch in range(plan.epochs):
            for path, offset, stride in plan.shares(epoch, worker):
                for index, payload in enumerate(read_record_views(path, plan.skip_corrupt, stats)):
                    if (index + offset) % stride == 0:
                        yield payload, path, index

    def _new_batch(self, buffers: LocalBuffers | SharedBuffers) -> Buffer:
        """A buffer for `batch_size` videos: no labels set, one frame each."""
        plan = self.plan
        dim = sum(s for _, s in plan.features)
        rows = plan.batch_size
        shape = (rows, plan.max_frames, dim) if plan.frame_level else (rows, dim)
        dtype = torch.uint8 if plan.frame_level else torch.float32
        buffer = buffers.take(Layout(shape, dtype, plan.num_classes))
        buffer.arrays[2][:] = 1
        return buffer

    def _decode(self, source: Source, buffer: Buffer, row: int) -> FrameRecord | VideoRecord:
        """Decode one record into row `row` of `buffer`; returns it. Done as the
        record arrives, while its bytes are still in the CPU cache from the CRC check."""
        plan = self.plan
        payload, path, index = source
        inputs_np, labels_np, num_frames_np = buffer.arrays
        where = f"{path}, record {index}"
        if plan.frame_level:
            record = parse_frame_record(
                payload,
                plan.features,
                max_frames=plan.max_frames,
                num_classes=plan.num_classes,
                source=where,
                out=inputs_np[row],
            )
            num_frames_np[row] = record.num_frames
            buffer.clear_stale(row, record.num_frames)
        else:
            record = parse_video_record(
                payload, plan.features, num_classes=plan.num_classes, source=where
            )
            inputs_np[row] = record.features
        labels_np[row, record.labels] = True
        return record

    def _batch(self, buffer: Buffer, records: list[FrameRecord | VideoRecord]) -> dict:
        """The batch of the first len(records) rows of `buffer`."""
        inputs, labels, num_frames = (t[: len(records)] for t in buffer.tensors)
        batch = {
            "video_ids": [record.video_id for record in records],
            "inputs": inputs,
            "num_frames": num_frames,
            "labels": labels,
            _BUFFER_KEY: buffer.place,
        }
        if self.plan.with_segments:
            batch["segments"] = BatchSegments.of([record.segments for record in records])
        return batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        plan = self.plan
        worker = (info.id + plan.first_worker) % plan.workers if info is not None else 0
        stats = ReadStats()
        if info is None:
            buffers = LocalBuffers(pin=plan.pin_memory)
        else:
            buffers = SharedBuffers(self.release, info.id)
        sources = self._sources(worker, stats)
        if plan.training:
            rng = np.random.default_rng([plan.seed, plan.rank, worker])
            sources = _shuffled(sources, plan.shuffle_buffer, rng)
        try:
            made = count = 0  # batches made (or skipped), records in the current one
            buffer, records = None, []
            for source in sources:
                if made >= plan.skip_batches[worker]:  # skipped batches are not decoded
                    if buffer is None:
                        buffer = self._new_batch(buffers)
                    records.append(self._decode(source, buffer, count))
                count += 1
                if count == plan.batch_size:
                    if buffer is not None:
                        yield self._batch(buffer, records)
                    made, count = made + 1, 0
                    buffer, records = None, []
            if buffer is not None:
                yield self._batch(buffer, records)
        except YT8MError as err:
            if info is None:
                raise
            yield {"error": err}  # re-raised by BatchLoader with its own message
        finally:
            stats.report()


class BatchLoader:
    """Iterable of batch dicts; a reader's `YT8MError` is re-raised here unchanged."""

    def __init__(self, plan: ReadPlan, loader: DataLoader, start_batch: int = 0) -> None:
        self.plan = plan
        self.dataloader = loader
        self.start_batch = start_batch

    def batch_count(self) -> int:
        """How many batches this loader yields, from the files' record counts (reads the
        record headers of this rank's share): one per started batch of each reader, in
        every epoch, less those a resumed run skips. An upper bound with
        ``--skip_corrupt_records`` (damaged records are dropped as they are met)."""
        counts: dict[str, int] = {}
        total = sum(self.plan.batch_count(w, counts) for w in range(self.plan.workers))
        return max(total - self.start_batch, 0)

    def __iter__(self) -> Iterator[dict]:
        release = self.dataloader.dataset.release
        if release is not None:
            release.reset()
        try:
            for batch in self.dataloader:
                if "error" in batch:
                    raise batch["error"]
                place = batch.pop(_BUFFER_KEY)
                if release is not None:
                    release.release_unused()
                    if place is not None:
                        release.hold(batch["inputs"], place)
                yield batch
        finally:
            if release is not None and release.pinned is not None:
                release.pinned.close()


def make_loader(
    flags: Flags,
    pattern: str,
    *,
    training: bool,
    batch_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    shuffle_buffer: int | None = None,
    pin_memory: bool = False,
    with_segments: bool = False,
) -> BatchLoader:
    """Batches of the records matching `pattern` for this rank.

    Each batch: ``video_ids`` list[str] [B]; ``inputs`` uint8 ``[B, max_frames, D]``
    zero-padded (frame-level) or float32 ``[B, D]`` (video-level); ``num_frames`` int64 [B]
    (video-level: ones); ``labels`` bool ``[B, num_classes]``; with `with_segments`,
    ``segments`` `BatchSegments` (the 2019 ratings of the B videos, `yt8m.segments`).
    Training: `flags.num_epochs` passes, shuffled by `flags.seed`; `start_batch=k` yields
    exactly what a fresh run yields from its batch k on. Evaluation: one pass, every record
    exactly once over all ranks and workers, in a stable order. `pin_memory`: the batches
    lie in page-locked memory (CUDA only), ready for copies that do not block the host.
    """
    batch_size = batch_size or flags.batch_size
    epochs = flags.num_epochs if training else 1
    if epochs is None or epochs < 1:
        raise FlagError(f"--num_epochs={flags.num_epochs}: give at least one pass")
    if not 0 <= rank < world_size:
        raise FlagError(f"rank {rank} is outside a world of {world_size} processes")
    workers = max(0, min(flags.num_readers, os.cpu_count() or 1))
    frame_level = flags.frame_features
    if shuffle_buffer is None:
        shuffle_buffer = FRAME_SHUFFLE_BUFFER if frame_level else VIDEO_SHUFFLE_BUFFER
    plan = ReadPlan(
        files=tuple(expand_pattern(pattern)),
        features=tuple(flags.feature_list()),
        frame_level=frame_level,
        max_frames=flags.max_frames,
        num_classes=flags.num_classes,
        batch_size=batch_size,
        training=training,
        epochs=epochs,
        seed=flags.seed,
        rank=rank,
        world_size=world_size,
        workers=max(workers, 1),
        skip_corrupt=flags.skip_corrupt_records,
        shuffle_buffer=max(shuffle_buffer, 1),
        skip_batches=(0,) * max(workers, 1),
        pin_memory=pin_memory,
        with_segments=with_segments,
    )
    if start_batch > 0:
        plan = _with_resume(plan, start_batch)
    release = None
    if workers:
        release = ReleaseFlags(workers, PinnedBlocks() if pin_memory else None)
    loader = DataLoader(
        RecordBatches(plan, release),
        batch_size=None,
        num_workers=workers,
        pin_memory=False,
        worker_init_fn=ignore_stop_signals if workers else None,  # the main process decides
    )
    return BatchLoader(plan, loader, start_batch)


def _with_resume(plan: ReadPlan, start_batch: int) -> ReadPlan:
    if plan.workers == 1:
        skips, first = (start_batch,), 0
    else:
        counts: dict[str, int] = {}
        batch_counts = [plan.batch_count(w, counts) for w in range(plan.workers)]
        skips, first = _round_robin_resume(batch_counts, start_batch)
    return dataclasses.replace(plan, skip_batches=skips, first_worker=first)
