"""Tiny segment-rated TFRecords for the segment tests (the 2019 format, successors.md §1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yt8m.data.records import Segments, encode_frame_record
from yt8m.data.tfrecord import TFRecordWriter

SIZES = (4, 2)  # rgb, audio
FEATURE_FLAGS = ["--frame_features", "--feature_names=rgb,audio", "--feature_sizes=4,2"]


def frames_of(n: int, first: int = 0) -> dict[str, np.ndarray]:
    """Frame t holds the value first + t in every channel (so segments are recognisable)."""
    values = (np.arange(n) + first).astype(np.uint8)[:, None]
    return {"rgb": np.repeat(values, SIZES[0], 1), "audio": np.repeat(values, SIZES[1], 1)}


def rated(labels, starts, scores) -> Segments:
    return Segments(
        np.array(labels, np.int64), np.array(starts, np.int64), np.array(scores, np.float32)
    )


def write_records(
    path: Path, videos: list[tuple[str, int, Segments | None]], firsts: list[int] | None = None
) -> str:
    """One file of videos ``(id, frames, segments)``; frame t of video i holds
    ``firsts[i] + t`` (default: t, the same frames in every video)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(path) as writer:
        for i, (video_id, n, segments) in enumerate(videos):
            first = firsts[i] if firsts is not None else 0
            frames = frames_of(n, first)
            writer.write(encode_frame_record(video_id, [0], frames, id_key="id", segments=segments))
    return str(path)
