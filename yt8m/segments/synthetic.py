"""``yt8m synth --segments``: a synthetic 2019 dataset, segment-rated validate and test
splits in the real format (successors.md §1-2), with structure that fine-tuning can learn.

Written beside each other, from one `yt8m.data.synthetic.Generator` (the same classes):

* ``frame/train*.tfrecord``: videos with video-level labels, as `yt8m synth` writes them
  (class evidence scattered over a fraction of the frames);
* ``frame/validate*.tfrecord`` (labels and ratings) and ``frame/test*.tfrecord`` (ratings,
  no labels: unlike the real test split, whose ratings are secret, so that a submission
  can be scored), key ``id``, with ``segment_labels``, ``segment_start_times`` (seconds)
  and ``segment_scores`` (0/1);
* ``segment_label_ids.csv``: the whitelist (header ``Index``), three classes in four.

A rated video: one of its labels that is whitelisted (one is added when none is) is its
rated class ``c``; about 5 of its 5-frame segments (``RATED_SEGMENTS``, fewer in a short
video) are rated for ``c``, each positive with probability 1/2. The class evidence sits in
the rated segments' frames: every frame of a positive segment carries ``c``'s evidence (its
mean and swing patterns, as a training video's evidence frames), every frame of a negative
one a decoy: the same evidence plus a distractor, one random direction of the dataset
(``DISTRACTOR_AMPLITUDE``), which never occurs in the training videos. A model trained on
whole videos sees the evidence in both and ranks them alike; unrated frames carry ``c``'s
evidence as a training video does. Fine-tuning on the rated segments teaches that the
distractor means "no", so it raises MAP on the test split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from yt8m.data.records import Segments, encode_frame_record
from yt8m.data.synthetic import Generator, prepare_output, quantize, video_id
from yt8m.data.tfrecord import TFRecordWriter
from yt8m.segments.whitelist import write_segment_label_ids

RATED_SPLITS = ("validate", "test")
RATED_SEGMENTS = 5
SEGMENT_SIZE = 5
POSITIVE_RATE = 0.5
DISTRACTOR_AMPLITUDE = 1.6
WHITELIST_FILE = "segment_label_ids.csv"


def whitelisted_classes(classes: int) -> np.ndarray:
    """Three classes in four: those with ``index % 4 != 3``."""
    return np.array([c for c in range(classes) if c % 4 != 3], np.int64)


def _rated_video(
    generator: Generator,
    labels: np.ndarray,
    frames: int,
    whitelist: np.ndarray,
    distractor: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, Segments]:
    """(labels, float frames ``[frames, dim]``, the ratings) of one rated video."""
    rng = generator.rng
    allowed = labels[np.isin(labels, whitelist)]
    if len(allowed):
        rated_class = int(allowed[rng.integers(len(allowed))])
    else:
        rated_class = int(whitelist[rng.integers(len(whitelist))])
        labels = np.sort(np.append(labels, rated_class))
    x = generator.background(frames)
    for label in labels[labels != rated_class]:
        generator.add_evidence(x, label, generator.evidence_frames(frames))
    slots = -(-frames // SEGMENT_SIZE)
    starts = np.sort(rng.permutation(slots)[: min(RATED_SEGMENTS, slots)]) * SEGMENT_SIZE
    positive = rng.random(len(starts)) < POSITIVE_RATE
    rated_rows = np.zeros(frames, bool)
    for start, good in zip(starts.tolist(), positive.tolist(), strict=True):
        rows = np.arange(start, min(start + SEGMENT_SIZE, frames))
        rated_rows[rows] = True
        generator.add_evidence(x, rated_class, rows)
        if not good:
            x[rows] += DISTRACTOR_AMPLITUDE * distractor
    elsewhere = np.flatnonzero(~rated_rows)
    if len(elsewhere):
        chosen = generator.evidence_frames(len(elsewhere))
        generator.add_evidence(x, rated_class, elsewhere[chosen])
    segments = Segments(
        np.full(len(starts), rated_class, np.int64),
        starts.astype(np.int64),
        positive.astype(np.float32),
    )
    return labels, np.clip(x, -2.0, 2.0, out=x), segments


def _frame_record(vid, labels, x, feature_sizes, id_key, segments=None) -> bytes:
    parts = np.split(x, np.cumsum(feature_sizes)[:-1], axis=1)
    frames = {name: quantize(part) for name, part in zip(("rgb", "audio"), parts, strict=True)}
    return encode_frame_record(vid, labels, frames, id_key=id_key, segments=segments)


def write_segment_dataset(
    output_dir: str | os.PathLike,
    *,
    videos: dict[str, int] | int = 1000,
    shards: int = 4,
    classes: int = 3862,
    id_key: str = "id",
    frames: tuple[int, int] = (60, 300),
    feature_sizes: tuple[int, int] = (1024, 128),
    seed: int = 0,
    shared_evidence: bool = False,
    overwrite: bool = False,
) -> dict[str, dict[str, str]]:
    """Write the dataset; returns ``{"frame": {split: pattern}}`` (the whitelist is
    `whitelist_path`). Arguments as `yt8m.data.synthetic.write_dataset` (frame-level;
    shared_evidence applies to the training videos; at least one frame a video)."""
    splits = ("train", *RATED_SPLITS)
    root, per_split = prepare_output(
        output_dir, videos, splits, frames, shards, classes, ("frame",), overwrite, min_frames=1
    )
    low, high = frames
    generator = Generator(classes, tuple(feature_sizes), seed, shared_evidence)
    whitelist = whitelisted_classes(classes)
    distractor = generator.rng.standard_normal(generator.dim).astype(np.float32)
    distractor /= np.linalg.norm(distractor)
    patterns: dict[str, dict[str, str]] = {"frame": {}}
    for split, count in per_split.items():
        labels = generator.labels(count)
        lengths = generator.rng.integers(low, high + 1, size=count)
        bounds = np.linspace(0, count, shards + 1).round().astype(int)
        for shard in range(shards):
            with TFRecordWriter(root / "frame" / f"{split}{shard:04d}.tfrecord") as writer:
                for index in range(bounds[shard], bounds[shard + 1]):
                    vid, n = video_id(split, index), int(lengths[index])
                    if split in RATED_SPLITS:
                        kept, x, segments = _rated_video(
                            generator, labels[index], n, whitelist, distractor
                        )
                        kept = None if split == "test" else kept
                    else:
                        kept, x, segments = labels[index], generator.video(labels[index], n), None
                    writer.write(_frame_record(vid, kept, x, feature_sizes, id_key, segments))
        patterns["frame"][split] = str(root / "frame" / f"{split}*.tfrecord")
    write_segment_label_ids(whitelist_path(root), whitelist)
    return patterns


def whitelist_path(output_dir: str | os.PathLike) -> Path:
    """The whitelist file of a dataset written by `write_segment_dataset`."""
    return Path(output_dir) / WHITELIST_FILE
