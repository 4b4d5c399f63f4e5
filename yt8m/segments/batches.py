"""Batches of segments in the loader's format (`yt8m.data.loader`), for training,
evaluation and inference with ``--segment_labels`` (successors.md §2).

* `rated_segment_loader` (train, eval): the rated segments of each video
  (`yt8m.segments.examples.rated_examples`). Training: the loader's shuffled videos cut
  into batches of exactly ``--batch_size`` segments (the starter's batching; the last
  partial batch kept); ``start_batch=k`` reads and drops the first k batches, so a resumed
  run continues exactly (it re-reads the data those batches used). Evaluation: one pass,
  every rated segment once over all ranks, ``segment_ids`` numbering them in reading order.
* `VideoSegments` (infer): every segment of every video (`cut_videos`), with the video ids
  read so far and ``segment_ids`` = ``video ordinal x slots + position`` in reading order.

Videos are read ``batch_size // segments per video`` at a time, so that a batch of
segments holds about ``--batch_size`` of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from yt8m.data import wire
from yt8m.data.loader import make_loader
from yt8m.data.tfrecord import read_record_views
from yt8m.flags import Flags
from yt8m.segments.errors import SegmentError
from yt8m.segments.examples import cut_videos, rated_examples, slots
from yt8m.segments.selection import MAX_ID

RATED_PER_VIDEO = 5  # about 5 rated segments per video in the 2019 data
_TENSORS = ("inputs", "num_frames", "labels", "label_weights")


def check_segment_flags(flags: Flags) -> None:
    """`--segment_labels` needs frame-level data and a positive `--segment_size`."""
    if not flags.frame_features:
        raise SegmentError(
            "--segment_labels reads frame-level data (segments are frames): add --frame_features"
        )
    if flags.segment_size < 1:
        raise SegmentError(f"--segment_size={flags.segment_size}: give at least 1 frame")


class RatedSegmentBatches:
    """Iterable of rated-segment batches (see `rated_segment_loader`)."""

    def __init__(
        self,
        flags: Flags,
        pattern: str,
        *,
        training: bool,
        batch_size: int | None,
        rank: int,
        world_size: int,
        start_batch: int,
        pin_memory: bool,
    ) -> None:
        check_segment_flags(flags)
        self.flags, self.pattern, self.training = flags, pattern, training
        self.batch_size = batch_size or flags.batch_size
        self.start_batch = start_batch
        self.videos = make_loader(
            flags,
            pattern,
            training=training,
            batch_size=max(1, self.batch_size // RATED_PER_VIDEO),
            rank=rank,
            world_size=world_size,
            pin_memory=pin_memory,
            with_segments=True,
        )

    def batch_count(self) -> int:
        """How many batches a training pass yields (after `start_batch`): the rated
        segments of this rank's share over all epochs, from the records' segment fields
        (no frame is decoded), in batches of ``batch_size``."""
        plan = self.videos.plan
        counts: dict[str, np.ndarray] = {}
        examples = 0
        for epoch in range(plan.epochs):
            for worker in range(plan.workers):
                for path, offset, stride in plan.shares(epoch, worker):
                    if path not in counts:
                        counts[path] = rated_start_counts(path)
                    examples += int(counts[path][(-offset) % stride :: stride].sum())
        return max(-(-examples // self.batch_size) - self.start_batch, 0)

    def _examples(self) -> Iterator[dict]:
        found = False
        for batch in self.videos:
            examples = rated_examples(
                batch, self.flags.segment_size, self.flags.num_classes, self.pattern
            )
            if examples["video_ids"]:
                found = True
                yield examples
        if not found:
            raise SegmentError(
                f"no rated segment in {self.pattern} (this process's share): --segment_labels "
                "reads the 2019 segment-rated files (segment_labels, segment_start_times, "
                "segment_scores), e.g. validate*.tfrecord"
            )

    def __iter__(self) -> Iterator[dict]:
        if not self.training:
            yield from _numbered(self._examples())
            return
        made = 0
        for batch in _rebatched(self._examples(), self.batch_size):
            if made >= self.start_batch:
                yield batch
            made += 1


def rated_segment_loader(
    flags: Flags,
    pattern: str,
    *,
    training: bool,
    batch_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    pin_memory: bool = False,
) -> RatedSegmentBatches:
    """`make_loader`'s signature and batch format for rated segments: ``video_ids``
    (``vid:start``) [S], ``inputs`` uint8 ``[S, segment_size, D]``, ``num_frames`` [S],
    ``labels`` bool ``[S, C]``, ``label_weights`` float32 ``[S, C]``; in evaluation also
    ``segment_ids`` int64 [S] and ``rated`` (`rated_examples`, rows numbered by id).
    Its `batch_count` (training) says how many batches it yields, as `make_loader`'s."""
    return RatedSegmentBatches(
        flags,
        pattern,
        training=training,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        start_batch=start_batch,
        pin_memory=pin_memory,
    )


def rated_start_counts(path: str) -> np.ndarray:
    """int64 ``[records]``: each record's distinct rated start times (its examples)."""
    counts = []
    for payload in read_record_views(path):
        context = wire.decode_context(payload, ("segment_start_times",))
        starts = context.get("segment_start_times", [])
        counts.append(0 if isinstance(starts, list) else len(np.unique(starts)))
    return np.array(counts, np.int64)


def _numbered(examples: Iterator[dict]) -> Iterator[dict]:
    """Evaluation batches with ``segment_ids`` in reading order and ``rated`` by id."""
    first = 0
    for batch in examples:
        count = len(batch["video_ids"])
        batch["segment_ids"] = torch.arange(first, first + count, dtype=torch.int64)
        rows, classes, scores = batch["rated"]
        batch["rated"] = (rows + first, classes, scores)
        first += count
        yield batch


def _rebatched(examples: Iterator[dict], batch_size: int) -> Iterator[dict]:
    """Batches of exactly `batch_size` rows out of batches of any size (the last partial)."""
    pending: list[dict] = []
    count = 0
    for batch in examples:
        pending.append(batch)
        count += len(batch["video_ids"])
        while count >= batch_size:
            joined = _joined(pending)
            yield _rows(joined, 0, batch_size)
            pending = [_rows(joined, batch_size, count)]
            count -= batch_size
    if count:
        yield _rows(_joined(pending), 0, count)


def _joined(batches: list[dict]) -> dict:
    if len(batches) == 1:
        return batches[0]
    joined = {name: torch.cat([b[name] for b in batches]) for name in _TENSORS}
    joined["video_ids"] = [name for b in batches for name in b["video_ids"]]
    return joined


def _rows(batch: dict, start: int, stop: int) -> dict:
    rows = {name: batch[name][start:stop] for name in _TENSORS}
    rows["video_ids"] = batch["video_ids"][start:stop]
    return rows


class VideoSegments:
    """Every segment of the videos of `pattern` (this rank's share), in batches.

    Each batch: ``video_ids`` (``vid:start``) [S], ``inputs`` uint8 ``[S, segment_size,
    D]``, ``num_frames`` int64 [S], ``segment_ids`` int64 [S]. `video_ids` lists the
    videos read so far: segment id ``i`` is video ``video_ids[i // slots]`` at start
    ``(i % slots) * segment_size``.
    """

    def __init__(self, flags: Flags, pattern: str, *, rank: int = 0, world_size: int = 1) -> None:
        check_segment_flags(flags)
        self.segment_size = flags.segment_size
        self.slots = slots(flags.max_frames, flags.segment_size)
        self.video_ids: list[str] = []
        self.videos = make_loader(
            flags,
            pattern,
            training=False,
            batch_size=max(1, flags.batch_size // self.slots),
            rank=rank,
            world_size=world_size,
        )

    def __iter__(self) -> Iterator[dict]:
        self.video_ids = []
        for batch in self.videos:
            first = len(self.video_ids)
            if (first + len(batch["video_ids"])) * self.slots > MAX_ID:
                raise SegmentError(
                    f"more than {MAX_ID // self.slots} videos in one process: run segment "
                    "inference under torchrun or on fewer files at a time"
                )
            self.video_ids.extend(batch["video_ids"])
            cut = cut_videos(batch["inputs"], batch["num_frames"], self.segment_size)
            names = batch["video_ids"]
            yield {
                "video_ids": [
                    f"{names[v]}:{s}"
                    for v, s in zip(cut.video_index.tolist(), cut.starts.tolist(), strict=True)
                ],
                "inputs": cut.frames,
                "num_frames": cut.num_frames,
                "segment_ids": (cut.video_index + first) * self.slots + cut.positions,
            }
