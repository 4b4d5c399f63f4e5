"""Kaggle submission files: `VideoId,LabelConfidencePairs` (fidelity.md §6).

One line per video: `id,` then `label confidence` pairs separated by spaces, highest
confidence first (equal confidences: smaller label first, the ranking rule of
`yt8m.metrics`), confidences written with ``%f``. Names ending in ``.gz`` are
gzip-compressed, for reading and writing.

Reading is vectorised: a chunk of lines is parsed by `numpy.loadtxt`; a chunk it
cannot parse (lines of different lengths, a bad token) is read again line by line,
which either parses it or raises `SubmissionError` naming the file and the line.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

from yt8m.errors import YT8MError
from yt8m.metrics import ArrayLike, first_nan_row, top_k_per_row

SUBMISSION_HEADER = "VideoId,LabelConfidencePairs"
# The original's averaging script wrote `VideoID`; headers are compared case-insensitively.
_HEADER_KEY = SUBMISSION_HEADER.lower()
_LARGEST_LABEL = 2**31 - 1


class SubmissionError(YT8MError, ValueError):
    """A prediction file that is not a valid submission; names the file and the line."""


def format_submission_lines(video_ids: Sequence[str], probabilities: ArrayLike, top_k: int) -> str:
    """The submission lines (no header) of a batch: `id,label conf label conf ...\\n`.

    probabilities: [B, C] (torch on any device, or numpy). Each line holds
    min(top_k, C) pairs, ranked by `yt8m.metrics.top_k_per_row`.
    """
    values, labels = top_k_per_row(probabilities, top_k)
    if len(video_ids) != values.shape[0]:
        raise SubmissionError(f"{len(video_ids)} video ids for {values.shape[0]} prediction rows")
    bad = first_nan_row(values)
    if bad is not None:
        raise SubmissionError(f"the predictions for video '{video_ids[bad]}' hold NaN")
    return format_ranked_lines(video_ids, labels, values.astype(np.float64))


def format_ranked_lines(
    video_ids: Sequence[str], labels: np.ndarray, confidences: np.ndarray
) -> str:
    """Lines for pairs already ranked: labels [B, k] int, confidences [B, k] float.

    A row may end in padding (label < 0), which is not written.
    """
    batch, k = labels.shape
    interleaved = np.empty((batch, 2 * k), dtype=np.float64)
    interleaved[:, 0::2] = labels
    interleaved[:, 1::2] = confidences
    counts = (labels >= 0).sum(axis=1)
    formats = ["%s," + " ".join(["%d %f"] * n) + "\n" for n in range(k + 1)]
    rows = interleaved.tolist()
    return "".join(
        formats[n] % (vid, *row[: 2 * n])
        for vid, row, n in zip(video_ids, rows, counts.tolist(), strict=True)
    )


@dataclass
class SubmissionChunk:
    """Consecutive lines of one file. pair_counts [n]; labels, confidences: the
    pairs of all n lines, concatenated in file order."""

    path: str
    first_line: int  # 1-based line number of video_ids[0]
    video_ids: list[str]
    pair_counts: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [sum(pair_counts)]
    confidences: np.ndarray  # float64 [sum(pair_counts)]


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a (possibly .gz) text file for reading."""
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_submission_chunks(
    path: str | os.PathLike, lines_per_chunk: int = 8192
) -> Iterator[SubmissionChunk]:
    """Yield the file's videos as chunks of up to `lines_per_chunk` lines.

    Raises SubmissionError (file and line) for a missing or wrong header, a line
    without `id,`, an odd number of tokens, a label that is not a non-negative
    integer, or a confidence that is not a finite number.
    """
    path = str(path)
    try:
        stream = open_text(path)
    except OSError as err:
        raise SubmissionError(f"{path}: cannot open: {err.strerror}") from err
    with stream:
        header = stream.readline()
        if header.strip().lower() != _HEADER_KEY:
            raise SubmissionError(
                f"{path}:1: expected the header '{SUBMISSION_HEADER}', found '{header.strip()[:80]}'"
            )
        line_number = 2
        while True:
            try:
                lines = list(itertools.islice(stream, lines_per_chunk))
            except (OSError, EOFError, UnicodeDecodeError) as err:
                raise SubmissionError(
                    f"{path}: unreadable after line {line_number - 1}: {err}"
                ) from err
            if not lines:
                return
            yield _parse_chunk(path, line_number, lines)
            line_number += len(lines)


def _parse_chunk(path: str, first_line: int, lines: list[str]) -> SubmissionChunk:
    ids, rests = [], []
    for offset, line in enumerate(lines):
        video_id, comma, rest = line.partition(",")
        if not comma or not video_id.strip():
            raise SubmissionError(
                f"{path}:{first_line + offset}: malformed line, expected 'id,label confidence ...'"
            )
        ids.append(video_id.strip())
        rests.append(rest)
    try:
        numbers = np.loadtxt(rests, delimiter=" ", dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        numbers = None
    if numbers is None or numbers.shape[0] != len(rests) or numbers.shape[1] % 2:
        return _parse_lines(path, first_line, ids, rests)
    labels, confidences = numbers[:, 0::2].ravel(), numbers[:, 1::2].ravel()
    valid_labels = (labels >= 0) & (labels <= _LARGEST_LABEL) & (labels == np.floor(labels))
    if not (valid_labels.all() and np.isfinite(confidences).all()):
        return _parse_lines(path, first_line, ids, rests)  # raises, naming the line
    counts = np.full(len(ids), numbers.shape[1] // 2, dtype=np.int64)
    return SubmissionChunk(path, first_line, ids, counts, labels.astype(np.int64), confidences)


def _parse_lines(path: str, first_line: int, ids: list[str], rests: list[str]) -> SubmissionChunk:
    """The slow, exact reader: one line at a time, precise errors."""
    counts, labels, confidences = [], [], []
    for offset, rest in enumerate(rests):
        where = f"{path}:{first_line + offset}"
        tokens = rest.split()
        if len(tokens) % 2:
            raise SubmissionError(f"{where}: odd number of tokens ({len(tokens)}) after the id")
        for label in tokens[0::2]:
            if not (label.isascii() and label.isdigit()) or int(label) > _LARGEST_LABEL:
                raise SubmissionError(f"{where}: label '{label}' is not a non-negative integer")
            labels.append(int(label))
        for confidence in tokens[1::2]:
            try:
                value = float(confidence)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value):
                raise SubmissionError(f"{where}: non-numeric confidence '{confidence}'")
            confidences.append(value)
        counts.append(len(tokens) // 2)
    return SubmissionChunk(
        path,
        first_line,
        ids,
        np.array(counts, dtype=np.int64),
        np.array(labels, dtype=np.int64),
        np.array(confidences, dtype=np.float64),
    )


def read_submission(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (video_id, labels int64 [n], confidences float64 [n]) for every line."""
    for chunk in read_submission_chunks(path):
        ends = np.cumsum(chunk.pair_counts)
        starts = ends - chunk.pair_counts
        for video_id, start, end in zip(
            chunk.video_ids, starts.tolist(), ends.tolist(), strict=True
        ):
            yield video_id, chunk.labels[start:end], chunk.confidences[start:end]
