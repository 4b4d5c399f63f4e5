"""Kaggle submission files: `VideoId,LabelConfidencePairs` (fidelity.md §6).

One line per video: `id,` then `label confidence` pairs separated by spaces, highest
confidence first (equal confidences: smaller label first, the ranking rule of
`yt8m.metrics`), confidences written with ``%f``. Names ending in ``.gz`` are
gzip-compressed, for reading and writing.

Reading is fast: files are read as bytes, a chunk of lines at a time. A chunk whose
lines all have the plain shape (`%d` labels, decimal confidences such as `%f`) is parsed
by `yt8m.csv_numbers.parse_pair_lines` in one compiled pass; any other chunk is decoded and parsed by
`numpy.loadtxt`, and a chunk that loadtxt cannot parse (lines of different lengths, a
bad token) is read again line by line, which either parses it or raises
`SubmissionError` naming the file and the line. Writing assembles a chunk's lines in
one byte matrix (`yt8m.csv_numbers.format_pair_lines`) when ids are ASCII and values
lie in [0, 1000); other chunks are written by Python's `%` formatting.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import IO

import numpy as np

from yt8m.csv_numbers import format_pair_lines, parse_pair_lines
from yt8m.errors import YT8MError
from yt8m.metrics import ArrayLike, first_nan_row, top_k_per_row

SUBMISSION_HEADER = "VideoId,LabelConfidencePairs"
# The original's averaging script wrote `VideoID`; headers are compared case-insensitively.
_HEADER_KEY = SUBMISSION_HEADER.lower()
_LARGEST_LABEL = 2**31 - 1
_FIRST_READ = 1 << 20  # bytes; later reads are sized for the lines still missing
_CUT_SHORT = (
    "the file ends inside this line (no newline after it): it was cut short; write it again"
)


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
    video_ids: Sequence[str] | np.ndarray, labels: np.ndarray, confidences: np.ndarray
) -> str:
    """Lines for pairs already ranked: labels [B, k] int, confidences [B, k] float.

    video_ids: B strings (a list, or an 'S' array of ASCII ids, or an object array). A row may end in padding
    (label < 0), which is not written.
    """
    if isinstance(video_ids, np.ndarray):
        video_ids = video_ids if video_ids.dtype.kind == "S" else video_ids.tolist()
    ids = video_ids if isinstance(video_ids, np.ndarray) else _ascii_ids(video_ids)
    if ids is not None:
        text = format_pair_lines(ids, labels, confidences)
        if text is not None:
            return text.decode("ascii")
    if isinstance(video_ids, np.ndarray):
        video_ids = video_ids.astype(str).tolist()
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


def _ascii_ids(video_ids: Sequence[str]) -> np.ndarray | None:
    """The ids as an 'S' array, or None when one is not ASCII or holds a NUL byte."""
    try:
        ids = np.array(video_ids, dtype="S")
    except UnicodeEncodeError:
        return None
    if ids.size and np.count_nonzero(ids.view(np.uint8)) != sum(map(len, video_ids)):
        return None
    return ids.reshape(len(video_ids))


@dataclass
class SubmissionChunk:
    """Consecutive lines of one file. pair_counts [n]; labels, confidences: the
    pairs of all n lines, concatenated in file order."""

    path: str
    first_line: int  # 1-based line number of the first video
    ids: np.ndarray  # [n] video ids: 'S' (ASCII, from the fast reader) or object (str)
    pair_counts: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [sum(pair_counts)]
    confidences: np.ndarray  # float64 [sum(pair_counts)]

    @cached_property
    def video_ids(self) -> list[str]:
        return (self.ids.astype(str) if self.ids.dtype.kind == "S" else self.ids).tolist()

    def same_videos(self, other: SubmissionChunk) -> bool:
        """Whether both chunks list the same videos in the same order."""
        if self.ids.dtype.kind == other.ids.dtype.kind == "S":
            return self.ids.shape == other.ids.shape and bool((self.ids == other.ids).all())
        return self.video_ids == other.video_ids


def read_submission_chunks(
    path: str | os.PathLike, lines_per_chunk: int = 8192
) -> Iterator[SubmissionChunk]:
    """Yield the file's videos as chunks of up to `lines_per_chunk` lines.

    Raises SubmissionError (file and line) for a missing or wrong header, a line
    without `id,`, an odd number of tokens, a label that is not a non-negative
    integer, a confidence that is not a finite number, or a file cut short: a last line
    without its newline, or a GZIP stream that ends early.
    """
    path = str(path)
    try:
        stream = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    except OSError as err:
        raise SubmissionError(f"{path}: cannot open: {err.strerror}") from err
    with stream:
        try:
            raw_header = stream.readline()
        except (OSError, EOFError) as err:
            raise SubmissionError(f"{path}: unreadable (truncated or damaged): {err}") from err
        header = raw_header.decode("utf-8", errors="replace")
        if header.strip().lower() == _HEADER_KEY and not raw_header.endswith(b"\n"):
            raise SubmissionError(f"{path}:1: {_CUT_SHORT}")
        if header.strip().lower() != _HEADER_KEY:
            raise SubmissionError(
                f"{path}:1: expected the header '{SUBMISSION_HEADER}', found '{header.strip()[:80]}'"
            )
        yield from _LineBlocks(stream, path, lines_per_chunk)


class _LineBlocks:
    """Chunks of whole lines read into one reused byte buffer."""

    def __init__(self, stream: IO[bytes], path: str, lines_per_chunk: int) -> None:
        self.stream, self.path, self.lines_per_chunk = stream, path, lines_per_chunk
        self.buffer = np.zeros(_FIRST_READ, dtype=np.uint8)
        self.work = np.empty(self.buffer.size, dtype=bool)
        self.size = 0  # bytes held
        self.ends = np.zeros(0, dtype=np.int64)  # positions of the held newlines
        self.line_number = 2
        self.bytes_done, self.lines_done = 0, 0

    def __iter__(self) -> Iterator[SubmissionChunk]:
        eof = False
        while True:
            while self.ends.size < self.lines_per_chunk and not eof:
                eof = not self._read()
            if self.ends.size == 0:
                return
            take = min(self.lines_per_chunk, self.ends.size)
            cut = int(self.ends[take - 1]) + 1
            parsed = parse_pair_lines(self.buffer, self.ends[:take])
            if parsed is None:
                chunk = _parse_text(self.path, self.line_number, self.buffer[:cut].tobytes())
            else:
                chunk = SubmissionChunk(
                    self.path,
                    self.line_number,
                    parsed.ids,
                    parsed.counts,
                    parsed.labels,
                    parsed.confidences,
                )
            self.line_number += len(chunk.ids)
            self.bytes_done += cut
            self.lines_done += take
            rest = self.size - cut
            self.buffer[:rest] = self.buffer[cut : cut + rest]
            self.ends = self.ends[take:] - cut
            self.size = rest
            yield chunk

    def _read(self) -> bool:
        """Read more bytes and find their newlines; False at the end of the file."""
        missing = self.lines_per_chunk - self.ends.size
        average = self.bytes_done / self.lines_done if self.lines_done else 0
        want = max(1 << 16, int(missing * average * 1.02)) if average else _FIRST_READ
        if self.size + want + 1 > self.buffer.size:
            grown = np.zeros(max(self.size + want + 1, 3 * self.buffer.size // 2), np.uint8)
            grown[: self.size] = self.buffer[: self.size]
            self.buffer, self.work = grown, np.empty(grown.size, dtype=bool)
        start = self.size
        try:
            got = self.stream.readinto(memoryview(self.buffer)[start : start + want])
        except (OSError, EOFError) as err:
            raise SubmissionError(
                f"{self.path}: unreadable after line {self.line_number - 1} "
                f"(truncated or damaged): {err}"
            ) from err
        if not got:
            held = self.ends[-1] + 1 if self.ends.size else 0
            if start > held:  # a last line without its newline: the file was cut short
                raise SubmissionError(
                    f"{self.path}:{self.line_number + self.ends.size}: {_CUT_SHORT}"
                )
            return False
        newline = np.equal(self.buffer[start : start + got], ord("\n"), out=self.work[:got])
        found = np.flatnonzero(newline)
        self.ends = np.concatenate([self.ends, found + start])
        self.size += got
        return True


def _parse_text(path: str, first_line: int, data: bytes) -> SubmissionChunk:
    """Lines of any shape, decoded as text (universal newlines, as `open` reads)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SubmissionError(f"{path}: unreadable after line {first_line - 1}: {err}") from err
    return _parse_chunk(path, first_line, io.StringIO(text, newline=None).readlines())


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
    return SubmissionChunk(
        path, first_line, _object_array(ids), counts, labels.astype(np.int64), confidences
    )


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
        _object_array(ids),
        np.array(counts, dtype=np.int64),
        np.array(labels, dtype=np.int64),
        np.array(confidences, dtype=np.float64),
    )


def _object_array(strings: list[str]) -> np.ndarray:
    array = np.empty(len(strings), dtype=object)
    array[:] = strings
    return array


def read_submission(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (video_id, labels int64 [n], confidences float64 [n]) for every line."""
    for chunk in read_submission_chunks(path):
        ends = np.cumsum(chunk.pair_counts)
        starts = ends - chunk.pair_counts
        for video_id, start, end in zip(
            chunk.video_ids, starts.tolist(), ends.tolist(), strict=True
        ):
            yield video_id, chunk.labels[start:end], chunk.confidences[start:end]
