"""Synthetic YouTube-8M datasets in the real format, with structure worth learning.

``yt8m synth --output DIR`` (or `write_dataset`) writes, for the splits train, validate and
test, frame-level files ``DIR/frame/{split}NNNN.tfrecord`` (SequenceExample: id, labels,
uint8 ``rgb``/``audio`` per frame) and video-level files ``DIR/video/{split}NNNN.tfrecord``
(Example: id, labels, float ``mean_rgb``/``mean_audio``). The test split has no labels.

The generative model, per dataset (seeded):

* Classes are Zipf-distributed: class ``c`` has weight ``(c + 1) ** -1.1``, so class 0 is
  the most common and most classes are rare (as in YouTube-8M, whose labels are numbered
  roughly by frequency).
* Every class owns three patterns, each a random unit direction in the visual space and one
  in the audio space: a *mean* pattern ``m_c`` and two *swing* patterns ``s_c1, s_c2``.
* A video has ``1 + Poisson(2)`` distinct labels (about 3), drawn by class weight, and
  ``n ~ U[min_frames, max_frames]`` frames.
* Frame ``t`` of a video starts as background: the video's scene vector (``N(0, 0.25^2)``
  per dimension, shared by all its frames, so it survives averaging as a nuisance) plus
  frame noise (``N(0, 0.4^2)`` per dimension, rows drawn from a fixed noise bank).
* Each label ``c`` marks a random fraction ``U[0.1, 0.4]`` of the frames as evidence. An
  evidence frame gets ``0.6 * m_c`` (visible in the video's mean) plus ``+-1.6`` times one of
  the swing patterns, signs balanced half and half over the evidence frames: the swing adds
  nothing to the mean but shows in every evidence frame, so a model that looks at how frames
  are distributed (NetVLAD, DBoF, ...) sees far more than a classifier of averaged features,
  which still learns something from ``m_c``.
* With ``shared_evidence`` (``yt8m synth --shared_evidence``) the labels of a video show
  in the same frames: one random fraction ``U[0.1, 0.4]`` of its frames carries the
  evidence of every label (each label's swing signs balanced in its own random order), as
  a real frame shows several of the video's entities at once. Frames are then sums of
  several classes' patterns, which a model that splits each frame into groups before
  pooling (NeXtVLAD) can take apart; `bench/quality.py` uses it (successors.md §3).
* Frames are clipped to [-2, 2] and quantized exactly as YouTube-8M's feature extractor did:
  ``round((x + 2) * 255 / 4)`` to uint8. ``mean_rgb``/``mean_audio`` are the means of the
  clipped float frames, as the real video-level features are means of the float features.

Video ids are unique (a split letter T/V/X and 5 scrambled base-62 digits) under ``video_id``
(2017 files, the default) or ``id`` (2018 and later).

Writing into a folder whose shards the returned globs would match is refused (the globs would
pick the old files up too); ``overwrite=True`` (``--overwrite``) first removes the shards a
previous run wrote there, and still refuses files of other names that the globs match.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from pathlib import Path

import numpy as np

from yt8m.data.records import ID_KEYS, encode_frame_record, encode_video_record
from yt8m.data.tfrecord import TFRecordWriter
from yt8m.errors import YT8MError

SPLITS = ("train", "validate", "test")
SPLIT_LETTERS = {"train": "T", "validate": "V", "test": "X"}
CLASS_WEIGHT_EXPONENT = 1.1
MEAN_LABELS_EXTRA = 2.0  # labels per video: 1 + Poisson(2)
SCENE_STD, NOISE_STD = 0.25, 0.4
MEAN_AMPLITUDE, SWING_AMPLITUDE = 0.6, 1.6
EVIDENCE_FRACTION = (0.1, 0.4)
NOISE_BANK_ROWS = 4096
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_DIGITS = 5
_ID_MULTIPLIER = 2654435761  # coprime with 62**5: index -> id is a bijection
_SHARD_NAME = re.compile(r"^(train|validate|test)\d{4}\.tfrecord$")  # what write_dataset writes


class SynthError(YT8MError, ValueError):
    """Arguments `yt8m synth` cannot write a dataset with; the message names the option."""


def quantize(features: np.ndarray) -> np.ndarray:
    """float features -> uint8, as YouTube-8M's extractor: clip to [-2, 2], round half even."""
    scaled = (np.clip(features, -2.0, 2.0) + 2.0) * (255.0 / 4.0)
    return np.rint(scaled).astype(np.uint8)


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    directions = rng.standard_normal((rows, dim), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions


class Generator:
    """Class patterns and a noise bank for one dataset; `video` draws one video."""

    def __init__(
        self,
        classes: int,
        feature_sizes: tuple[int, ...],
        seed: int,
        shared_evidence: bool = False,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.shared_evidence = shared_evidence
        self.dim = sum(feature_sizes)
        weights = np.arange(1, classes + 1, dtype=np.float64) ** -CLASS_WEIGHT_EXPONENT
        self.log_weights = np.log(weights / weights.sum())
        # patterns[c, p]: p = 0 mean pattern, 1-2 swing patterns; unit norm per modality
        self.patterns = np.concatenate(
            [
                _unit_rows(self.rng, classes * 3, size).reshape(classes, 3, size)
                for size in feature_sizes
            ],
            axis=2,
        )
        self.noise = self.rng.standard_normal((NOISE_BANK_ROWS, self.dim), dtype=np.float32)
        self.noise *= NOISE_STD

    def labels(self, videos: int) -> list[np.ndarray]:
        """About three distinct labels per video, drawn by class weight (Gumbel top-k)."""
        classes = len(self.log_weights)
        counts = np.minimum(1 + self.rng.poisson(MEAN_LABELS_EXTRA, videos), min(classes, 12))
        most = int(counts.max(initial=1))
        keys = self.log_weights + self.rng.gumbel(size=(videos, classes))
        top = np.argpartition(-keys, most - 1, axis=1)[:, :most]
        order = np.take_along_axis(keys, top, axis=1).argsort(axis=1)[:, ::-1]
        ranked = np.take_along_axis(top, order, axis=1)
        return [np.sort(ranked[v, : counts[v]]) for v in range(videos)]

    def video(self, labels: np.ndarray, frames: int) -> np.ndarray:
        """Float frames ``[frames, dim]`` in [-2, 2] carrying the evidence of `labels`."""
        x = self.background(frames)
        if self.shared_evidence:
            shared = self.evidence_frames(frames)
        for label in labels:
            if self.shared_evidence:
                order = self.rng.permutation(len(shared))
                self.add_evidence(x, label, shared, order)
            else:
                self.add_evidence(x, label, self.evidence_frames(frames))
        return np.clip(x, -2.0, 2.0, out=x)

    def background(self, frames: int) -> np.ndarray:
        """Unclipped float frames ``[frames, dim]``: the scene vector plus frame noise."""
        x = self.noise[self.rng.integers(NOISE_BANK_ROWS, size=frames)]
        x += self.rng.normal(0.0, SCENE_STD, self.dim).astype(np.float32)
        return x

    def evidence_frames(self, frames: int) -> np.ndarray:
        """A random fraction `EVIDENCE_FRACTION` of the rows ``0..frames-1`` (at least one)."""
        count = min(frames, max(1, round(self.rng.uniform(*EVIDENCE_FRACTION) * frames)))
        return self.rng.permutation(frames)[:count]

    def add_evidence(
        self, x: np.ndarray, label: int, where: np.ndarray, order: np.ndarray | None = None
    ) -> None:
        """Add class `label`'s evidence to the rows `where` of `x`: its mean pattern and
        a swing pattern whose sign alternates along `order` (a permutation of
        ``range(len(where))``; default: the order of `where`), see the module's docstring."""
        count = len(where)
        order = np.arange(count) if order is None else order
        signs = np.where(order % 2 == 0, SWING_AMPLITUDE, -SWING_AMPLITUDE)
        swing = self.patterns[label, 1 + self.rng.integers(2, size=count)]
        x[where] += signs[:, None].astype(np.float32) * swing
        x[where] += MEAN_AMPLITUDE * self.patterns[label, 0]


def video_id(split: str, index: int) -> str:
    """Unique, real-looking id: split letter + 5 base-62 digits of a scrambled index."""
    if split not in SPLIT_LETTERS:
        raise SynthError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
    value = (index * _ID_MULTIPLIER + 12345) % len(_ALPHABET) ** _ID_DIGITS
    digits = []
    for _ in range(_ID_DIGITS):
        value, digit = divmod(value, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return SPLIT_LETTERS[split] + "".join(digits)


def _write_video(
    writers: dict[str, TFRecordWriter],
    vid: str,
    labels: np.ndarray | None,
    x: np.ndarray,
    feature_sizes: tuple[int, ...],
    id_key: str,
) -> None:
    """Write float frames ``x [n, sum(sizes)]`` as a frame-level and/or video-level record."""
    parts = dict(
        zip(("rgb", "audio"), np.split(x, np.cumsum(feature_sizes)[:-1], axis=1), strict=True)
    )
    if "frame" in writers:
        quantized = {name: quantize(part) for name, part in parts.items()}
        writers["frame"].write(encode_frame_record(vid, labels, quantized, id_key=id_key))
    if "video" in writers:
        means = {
            f"mean_{name}": part.mean(axis=0) if len(part) else np.zeros(part.shape[1])
            for name, part in parts.items()
        }
        writers["video"].write(encode_video_record(vid, labels, means, id_key=id_key))


def _clear_old_shards(
    root: Path, levels: tuple[str, ...], splits: list[str], overwrite: bool
) -> None:
    """Refuse (or, overwriting, remove) files the globs of these levels and splits match."""
    found = sorted(
        path
        for level in levels
        for split in splits
        for path in (root / level).glob(f"{split}*.tfrecord")
    )
    if not found:
        return
    if overwrite:
        for path in found:
            if _SHARD_NAME.match(path.name):
                path.unlink()
        found = [path for path in found if path.exists()]
        if not found:
            return
        raise SynthError(
            f"{root} holds files the globs would pick up that synth did not write "
            f"({', '.join(map(str, found[:3]))}{', ...' if len(found) > 3 else ''}): "
            "move them away or choose another --output"
        )
    listed = ", ".join(map(str, found[:3])) + (
        f", ... ({len(found)} files)" if len(found) > 3 else ""
    )
    raise SynthError(
        f"{root} already holds shards ({listed}); the globs printed would pick them up with "
        "the new ones: choose another --output, or --overwrite to remove them first"
    )


def prepare_output(
    output_dir: str | os.PathLike,
    videos: dict[str, int] | int,
    splits: tuple[str, ...],
    frames: tuple[int, int],
    shards: int,
    classes: int,
    levels: tuple[str, ...],
    overwrite: bool,
    min_frames: int = 0,
) -> tuple[Path, dict[str, int]]:
    """Check a dataset's options and make its folders (old shards refused or, overwriting,
    removed: `_clear_old_shards`); returns (root, videos per split). Bad values are a
    `SynthError` naming the option."""
    per_split = videos if isinstance(videos, dict) else dict.fromkeys(splits, videos)
    low, high = frames
    if not min_frames <= low <= high:
        raise SynthError(
            f"frames per video: the minimum {low} must lie between {min_frames} and the "
            f"maximum {high} (--min_frames <= --max_frames)"
        )
    if shards < 1 or classes < 1 or min(per_split.values(), default=0) < 0:
        raise SynthError(
            f"--shards={shards} and --classes={classes} must be at least 1 and the video "
            f"counts ({per_split}) at least 0"
        )
    root = Path(output_dir)
    if root.exists() and not root.is_dir():
        raise SynthError(f"--output {root} is a file: give the directory to write into")
    _clear_old_shards(root, levels, list(per_split), overwrite)
    try:
        for level in levels:
            (root / level).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SynthError(f"--output {root}: cannot create its folders: {err}") from None
    return root, per_split


def write_dataset(
    output_dir: str | os.PathLike,
    *,
    videos: dict[str, int] | int = 1000,
    shards: int = 4,
    classes: int = 4716,
    id_key: str = "video_id",
    frames: tuple[int, int] = (60, 300),
    feature_sizes: tuple[int, int] = (1024, 128),
    seed: int = 0,
    levels: tuple[str, ...] = ("frame", "video"),
    overwrite: bool = False,
    shared_evidence: bool = False,
) -> dict[str, dict[str, str]]:
    """Write a synthetic dataset; returns the glob of each level and split.

    videos: per split (``{"train": 800, "validate": 100, "test": 100}``) or one number for
        every split. shards: files per split and level. frames: (min, max) frames per video.
    feature_sizes: sizes of ``rgb``/``audio`` (and ``mean_rgb``/``mean_audio``); use the
        same with ``--feature_sizes``. levels: "frame", "video" or both. shared_evidence:
        every label of a video in the same frames (see above).
    overwrite: remove the shards an earlier call wrote for these levels and splits (without
        it, a folder holding files that the returned globs match is a `SynthError`).
    Returns ``{level: {split: pattern}}``, e.g. ``patterns["frame"]["train"]``.
    """
    if id_key not in ID_KEYS:
        raise SynthError(f"id_key must be one of {ID_KEYS}, not {id_key!r}")
    root, per_split = prepare_output(
        output_dir, videos, SPLITS, frames, shards, classes, levels, overwrite
    )
    low, high = frames
    generator = Generator(classes, tuple(feature_sizes), seed, shared_evidence)
    patterns: dict[str, dict[str, str]] = {level: {} for level in levels}
    for split, count in per_split.items():
        labels = generator.labels(count)
        lengths = generator.rng.integers(low, high + 1, size=count)
        bounds = np.linspace(0, count, shards + 1).round().astype(int)
        for shard in range(shards):
            with contextlib.ExitStack() as stack:
                writers = {
                    level: stack.enter_context(
                        TFRecordWriter(root / level / f"{split}{shard:04d}.tfrecord")
                    )
                    for level in levels
                }
                for index in range(bounds[shard], bounds[shard + 1]):
                    x = generator.video(labels[index], int(lengths[index]))
                    kept = labels[index] if split != "test" else None
                    _write_video(writers, video_id(split, index), kept, x, feature_sizes, id_key)
        for level in levels:
            patterns[level][split] = str(root / level / f"{split}*.tfrecord")
    return patterns


def main(argv: list[str]) -> int:
    from yt8m.segments.synthetic import whitelist_path, write_segment_dataset  # (a cycle)

    parser = argparse.ArgumentParser(
        prog="yt8m synth",
        description="Write a synthetic YouTube-8M dataset (frame- and video-level TFRecords).",
    )
    parser.add_argument("--output", required=True, help="directory to write into")
    parser.add_argument("--train_videos", type=int, default=1000)
    parser.add_argument("--validate_videos", type=int, default=300)
    parser.add_argument("--test_videos", type=int, default=300)
    parser.add_argument("--shards", type=int, default=4, help="files per split and level")
    parser.add_argument("--classes", type=int, default=4716)
    parser.add_argument("--id_key", choices=ID_KEYS, help="video_id (the default) or id")
    parser.add_argument("--min_frames", type=int, default=60)
    parser.add_argument("--max_frames", type=int, default=300)
    parser.add_argument("--feature_sizes", default="1024,128", help="rgb,audio sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="remove the shards of an earlier run there first"
    )
    parser.add_argument(
        "--segments",
        action="store_true",
        help="2019 segment-rated validate/test splits and a whitelist (key id, frame-level)",
    )
    parser.add_argument(
        "--shared_evidence", action="store_true", help="a video's labels show in the same frames"
    )
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.feature_sizes.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 2 or min(sizes) < 1:
        raise SynthError(
            f"--feature_sizes={args.feature_sizes}: give two positive sizes, rgb,audio (1024,128)"
        )
    counts = {
        "train": args.train_videos,
        "validate": args.validate_videos,
        "test": args.test_videos,
    }
    writer = write_segment_dataset if args.segments else write_dataset  # yt8m.segments.synthetic
    patterns = writer(
        args.output,
        videos=counts,
        shards=args.shards,
        classes=args.classes,
        id_key=args.id_key or ("id" if args.segments else "video_id"),
        frames=(args.min_frames, args.max_frames),
        feature_sizes=sizes,
        seed=args.seed,
        overwrite=args.overwrite,
        shared_evidence=args.shared_evidence,
    )
    for level, splits in patterns.items():
        for split, pattern in splits.items():
            print(f"{level:5} {split:8} {counts[split]:6d} videos  {pattern}")
    if args.segments:
        print(f"whitelist {whitelist_path(args.output)}")
    return 0
