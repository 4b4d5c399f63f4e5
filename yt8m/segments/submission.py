"""Kaggle 2019 segment submissions: ``Class,Segments`` (successors.md §2).

One line per class: ``class_index,vid:start vid:start ...``, best segment first, start
times in seconds (multiples of the segment size); gzip when the name ends in ``.gz``.

`write_segment_submission` writes a `Selection` (`yt8m.segments.selection`) whose ids
number segments as `yt8m.segments.batches.VideoSegments` does (``video ordinal x slots +
position``), one compiled pass per class line, atomically. `iter_submission_lines` reads a
file line by line and checks what a line must be (the header, an integer class, a class
of the whitelist, each class once), leaving the entries to `yt8m.segments.matching`.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from yt8m.atomic import atomic_output
from yt8m.compiled import kernel
from yt8m.segments.errors import SegmentError
from yt8m.segments.selection import Selection, key_ids

HEADER = "Class,Segments"
_SPACE = ord(" ")
_LINE_ENDS = b"\r\n"
_READ_BUFFER = 1 << 24


def video_table(video_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ids as UTF-8 bytes in one uint8 array and their offsets int64 ``[V + 1]``."""
    encoded = [v.encode("utf-8") for v in video_ids]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


@kernel
def _format_tokens(videos, starts, names, offsets, separator, out, ends):  # pragma: no cover
    """Write ``vid:start`` for each (video, start) into `out`, `separator` (a byte, or -1
    for none) between them; ends[i] = where token i ends. Returns the length written."""
    digits = np.empty(20, np.uint8)
    at = 0
    for i in range(len(videos)):
        if i and separator >= 0:
            out[at] = separator
            at += 1
        video, start = videos[i], starts[i]
        for j in range(offsets[video], offsets[video + 1]):
            out[at] = names[j]
            at += 1
        out[at] = 58
        at += 1
        count = 0
        while True:
            digits[count] = 48 + start % 10
            count += 1
            start //= 10
            if start == 0:
                break
        for j in range(count - 1, -1, -1):
            out[at] = digits[j]
            at += 1
        ends[i] = at
    return at


def format_tokens(
    videos: np.ndarray, starts: np.ndarray, names: np.ndarray, offsets: np.ndarray, separator: int
) -> tuple[np.ndarray, np.ndarray]:
    """``vid:start`` of each (video of `video_table`, start >= 0 in seconds) as one uint8
    array, `separator` between them (-1: none), and where each ends (int64)."""
    longest = int(np.diff(offsets).max(initial=0))
    out = np.empty(len(videos) * (longest + 22), np.uint8)
    ends = np.empty(len(videos), np.int64)
    length = _format_tokens(videos, starts, names, offsets, separator, out, ends)
    return out[:length], ends


def write_segment_submission(
    path: str | Path,
    classes: np.ndarray,
    selection: Selection,
    video_ids: Sequence[str],
    slots: int,
    segment_size: int,
) -> None:
    """Write the submission: class ``classes[c]`` gets the segments of
    ``selection.column(c)``, best first; segment id ``i`` is video ``video_ids[i // slots]``
    at ``(i % slots) * segment_size`` seconds. The file appears complete or not at all."""
    names, offsets = video_table(video_ids)
    with atomic_output(path, binary=True) as out:
        out.write(f"{HEADER}\n".encode())
        for c, label in enumerate(classes.tolist()):
            ids = key_ids(selection.column(c))
            line, _ = format_tokens(
                ids // slots, ids % slots * segment_size, names, offsets, _SPACE
            )
            out.write(f"{label},".encode())
            out.write(line.tobytes())
            out.write(b"\n")


def _open(path: str):
    """The file as a binary stream with a large buffer (class lines are about 1 MB)."""
    try:
        if path.endswith(".gz"):
            return io.BufferedReader(gzip.open(path, "rb"), _READ_BUFFER)
        return open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115
    except FileNotFoundError:
        raise SegmentError(f"--submission_file={path}: no such file") from None


def iter_submission_lines(
    path: str, known_classes: np.ndarray, what: str
) -> Iterator[tuple[int, int, memoryview]]:
    """``(line number, class, entries)`` of every class line of `path`, entries as a
    bytes view (``vid:start vid:start``, without the line end). Errors name the file and line: a header other than
    ``Class,Segments``, a line without a comma, a class that is not an integer or not in
    `known_classes` (int64, increasing; `what` says where they come from), a class twice.
    Blank lines are skipped."""
    seen: dict[int, int] = {}
    with _open(path) as stream:
        try:
            header = stream.readline().rstrip(b"\r\n")
            if header.decode("utf-8", "replace").strip().lower() != HEADER.lower():
                raise SegmentError(
                    f"{path}, line 1: the header must be '{HEADER}' (a Kaggle 2019 segment "
                    f"submission), found {header[:40].decode('utf-8', 'replace')!r}"
                )
            for number, raw in enumerate(stream, start=2):
                end = len(raw)
                while end and raw[end - 1] in _LINE_ENDS:
                    end -= 1
                comma = raw.find(b",", 0, end)
                where = f"{path}, line {number}"
                if comma < 0:
                    if not raw[:end].strip():
                        continue  # a blank line
                    raise SegmentError(
                        f"{where}: no comma; a line is 'class,vid:start vid:start ...'"
                    )
                head, entries = raw[:comma], memoryview(raw)[comma + 1 : end]  # no copy
                try:
                    label = int(head.strip())
                except ValueError:
                    text = head[:40].decode("utf-8", "replace")
                    raise SegmentError(f"{where}: the class {text!r} is not an integer") from None
                position = np.searchsorted(known_classes, label)
                if position == len(known_classes) or known_classes[position] != label:
                    raise SegmentError(f"{where}: class {label} is unknown ({what})")
                if label in seen:
                    raise SegmentError(
                        f"{where}: class {label} again (first on line {seen[label]}); "
                        "give each class one line"
                    )
                seen[label] = number
                yield number, label, entries
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise SegmentError(f"{path} cannot be read: {err}") from None
