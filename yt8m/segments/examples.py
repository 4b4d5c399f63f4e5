"""Videos cut into segments, and the rated segments as training examples (successors.md §2).

Both work on a loader batch (`yt8m.data.loader.make_loader`: uint8 frames ``[B, T, D]``,
``num_frames`` ``[B]``, rows past a video's frames zero) and give batches in the loader's
format, frames still uint8, so that any model reads them as it reads videos:

* `cut_videos`: every video into consecutive segments of ``segment_size`` frames, starting
  at 0, size, 2 size, ... (start times in seconds: one frame a second); the last segment of
  a video whose length is not a multiple of the size is shorter (``num_frames`` says how
  much; its missing rows are zero). A video without frames has no segment.
* `rated_examples`: one example per distinct start time of a video's rated segments (the
  starter's reader: all ratings at that start time in one example), ``segment_size`` frames
  from that start; ``labels`` = rating > 0 at the rated classes, ``label_weights`` = 1 at
  the rated classes and 0 elsewhere, so that the loss counts rated classes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from yt8m.data.records import BatchSegments, Segments
from yt8m.segments.errors import SegmentError


@dataclass
class Cut:
    """Segments of a batch of videos: frames uint8 ``[S, size, D]``, num_frames int64
    ``[S]``, the video each came from (row of the batch) int64 ``[S]``, its start time
    (frame index) int64 ``[S]`` and its position in its video int64 ``[S]``."""

    frames: torch.Tensor
    num_frames: torch.Tensor
    video_index: torch.Tensor
    starts: torch.Tensor
    positions: torch.Tensor


def slots(max_frames: int, segment_size: int) -> int:
    """Segments a video of `max_frames` frames has at most."""
    return -(-max_frames // segment_size)


def cut_videos(inputs: torch.Tensor, num_frames: torch.Tensor, segment_size: int) -> Cut:
    """Every video of ``inputs [B, T, D]`` (``num_frames [B]``) cut into segments."""
    batch, frames, dim = inputs.shape
    per_video = slots(frames, segment_size)
    padded = F.pad(inputs, (0, 0, 0, per_video * segment_size - frames))
    grid = padded.view(batch, per_video, segment_size, dim)
    starts = torch.arange(per_video, dtype=torch.int64) * segment_size
    remaining = num_frames.to(torch.int64).unsqueeze(1) - starts.unsqueeze(0)  # [B, slots]
    real = remaining > 0
    video_index, positions = real.nonzero(as_tuple=True)
    return Cut(
        frames=grid[video_index, positions],
        num_frames=remaining[real].clamp(max=segment_size),
        video_index=video_index,
        starts=positions * segment_size,
        positions=positions,
    )


def _checked_segments(
    segments: Segments, video_id: str, num_frames: int, num_classes: int, where: str
) -> Segments:
    """`segments` of one video, or an error naming the video: a class outside the
    vocabulary, a start time outside the video's frames, one pair rated twice differently."""
    name = f"{where}, video {video_id!r}"
    bad = segments.labels[(segments.labels < 0) | (segments.labels >= num_classes)]
    if bad.size:
        raise SegmentError(
            f"{name}: segment label {int(bad[0])} is outside 0..{num_classes - 1} "
            f"(--num_classes={num_classes}; 3862 for the 2019 data)"
        )
    outside = segments.start_times[
        (segments.start_times < 0) | (segments.start_times >= num_frames)
    ]
    if outside.size:
        raise SegmentError(
            f"{name}: a rated segment starts at {int(outside[0])} s, outside the video's "
            f"{num_frames} frames (read up to --max_frames)"
        )
    key = segments.start_times * num_classes + segments.labels
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    differ = same & (segments.scores[order][1:] != segments.scores[order][:-1])
    if differ.any():
        first = order[1:][differ][0]
        raise SegmentError(
            f"{name}: the segment at {int(segments.start_times[first])} s is rated twice for "
            f"class {int(segments.labels[first])}, with different scores"
        )
    return segments


def rated_examples(batch: dict, segment_size: int, num_classes: int, where: str) -> dict:
    """The rated-segment examples of a loader batch made with ``with_segments=True``.

    Returns a batch: ``video_ids`` list[str] ``["vid:start", ...]`` [S], ``inputs`` uint8
    ``[S, segment_size, D]``, ``num_frames`` int64 [S], ``labels`` bool [S, C] (rating > 0),
    ``label_weights`` float32 [S, C] (1 at the rated classes), ``rated`` (rated pairs:
    example row, class, score: int64, int64, float32 arrays) for the segment metric.
    `where` names the data in errors.
    """
    inputs, num_frames = batch["inputs"], batch["num_frames"]
    dim = inputs.shape[2]
    padded = F.pad(inputs, (0, 0, 0, segment_size))
    names, rows, starts, lengths = [], [], [], []
    pair_rows, pair_classes, pair_scores = [], [], []
    ratings: BatchSegments = batch["segments"]
    for b, video_id in enumerate(batch["video_ids"]):
        segments = ratings.video(b)
        if not len(segments.labels):
            continue
        frames = int(num_frames[b])
        segments = _checked_segments(segments, video_id, frames, num_classes, where)
        unique, example = np.unique(segments.start_times, return_inverse=True)
        first = len(names)
        for start in unique.tolist():
            names.append(f"{video_id}:{start}")
            rows.append(b)
            starts.append(start)
            lengths.append(min(segment_size, frames - start))
        pair_rows.append(example.reshape(-1) + first)
        pair_classes.append(segments.labels)
        pair_scores.append(segments.scores)
    count = len(names)
    rated = (
        np.concatenate(pair_rows) if pair_rows else np.zeros(0, np.int64),
        np.concatenate(pair_classes) if pair_classes else np.zeros(0, np.int64),
        np.concatenate(pair_scores) if pair_scores else np.zeros(0, np.float32),
    )
    index = torch.as_tensor(starts, dtype=torch.int64).unsqueeze(1) + torch.arange(segment_size)
    video = torch.as_tensor(rows, dtype=torch.int64).unsqueeze(1).expand(-1, segment_size)
    frames = (
        padded[video, index] if count else torch.zeros((0, segment_size, dim), dtype=inputs.dtype)
    )
    labels = torch.zeros((count, num_classes), dtype=torch.bool)
    weights = torch.zeros((count, num_classes), dtype=torch.float32)
    example_rows, classes = torch.from_numpy(rated[0]), torch.from_numpy(rated[1])
    weights[example_rows, classes] = 1.0
    labels[example_rows, classes] = torch.from_numpy(rated[2] > 0)
    return {
        "video_ids": names,
        "inputs": frames,
        "num_frames": torch.as_tensor(lengths, dtype=torch.int64),
        "labels": labels,
        "label_weights": weights,
        "rated": rated,
    }
