"""Submission entries matched against the rated pairs, one class line at a time, in one
compiled pass over its bytes (successors.md §2: entries are strings ``vid:start``; a
rated pair is found by string equality).

`RatedIndex` holds two open-addressing hash tables: the rated videos' ids (FNV-1a of the
bytes, verified byte by byte) and the rated pairs (video, start, class) packed in one
int64. `RatedIndex.match` walks a line's entries (separated by runs of spaces or tabs) and
returns each one's code, `POSITIVE`/`NEGATIVE`/`UNRATED` (`yt8m.segments.map_at_k`), in
submission order, checking each entry on the way:

* an entry that is not ``vid:start`` (a non-empty id, a colon, decimal digits; the id is
  what precedes the last colon) is an error naming it;
* an entry twice in one line is an error naming it (it would count twice);
* a start that is not a multiple of the segment size, or is written with leading zeros,
  names no segment that inference writes: counted (``off_grid``) and looked up as written
  (a leading-zero start never equals a rated id).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yt8m.compiled import kernel
from yt8m.segments.errors import SegmentError
from yt8m.segments.ground_truth import RatedPairs
from yt8m.segments.map_at_k import NEGATIVE, POSITIVE
from yt8m.segments.submission import video_table

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MALFORMED, _DUPLICATE = 1, 2


def _table_size(entries: int) -> int:
    """A power of two at least twice `entries` (load factor at most 1/2)."""
    return 1 << max(4, (2 * max(entries, 1) - 1).bit_length())


@kernel
def _fnv(data, lo, hi):  # pragma: no cover - compiled
    h = _FNV_OFFSET
    for i in range(lo, hi):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h


@kernel
def _slot(key, mask):  # pragma: no cover - compiled
    return np.int64(((np.uint64(key) * _MIX) >> np.uint64(20)) & np.uint64(mask))


@kernel
def _build_tables(names, offsets, vmask, pair_keys, pair_codes, pmask):  # pragma: no cover
    videos = np.full(vmask + 1, -1, np.int64)
    for v in range(len(offsets) - 1):
        slot = np.int64(_fnv(names, offsets[v], offsets[v + 1]) & np.uint64(vmask))
        while videos[slot] >= 0:
            slot = (slot + 1) & vmask
        videos[slot] = v
    keys = np.full(pmask + 1, -1, np.int64)
    codes = np.zeros(pmask + 1, np.int8)
    for i in range(len(pair_keys)):
        slot = _slot(pair_keys[i], pmask)
        while keys[slot] >= 0:
            slot = (slot + 1) & pmask
        keys[slot] = pair_keys[i]
        codes[slot] = pair_codes[i]
    return videos, keys, codes


@kernel
def _same_bytes(a, a_lo, a_hi, b, b_lo, b_hi):  # pragma: no cover - compiled
    if a_hi - a_lo != b_hi - b_lo:
        return False
    for i in range(a_hi - a_lo):
        if a[a_lo + i] != b[b_lo + i]:
            return False
    return True


@kernel
def _match(  # pragma: no cover - compiled
    line, names, offsets, videos, vmask, keys, key_codes, pmask,
    start_range, class_range, label, segment_size, codes, dmask,
):  # fmt: skip
    """Codes of the entries of `line`; returns (entries, off_grid, error, a0, a1, b0, b1):
    error 1 = entry line[a0:a1] malformed, 2 = it repeats line[b0:b1]."""
    seen_hash = np.empty(dmask + 1, np.uint64)
    seen_at = np.full(dmask + 1, -1, np.int64)
    seen_end = np.empty(dmask + 1, np.int64)
    n = len(line)
    i = 0
    count = 0
    off_grid = 0
    while i < n:
        if line[i] == 32 or line[i] == 9:
            i += 1
            continue
        t0 = i
        colon = -1
        h = _FNV_OFFSET
        id_hash = h
        while i < n and line[i] != 32 and line[i] != 9:
            if line[i] == 58:
                colon = i
                id_hash = h
            h = (h ^ np.uint64(line[i])) * _FNV_PRIME
            i += 1
        t1 = i
        digits = t1 - colon - 1
        if colon <= t0 or digits < 1 or digits > 12:
            return count, off_grid, 1, t0, t1, 0, 0
        start = 0
        for j in range(colon + 1, t1):
            d = np.int64(line[j]) - 48
            if d < 0 or d > 9:
                return count, off_grid, 1, t0, t1, 0, 0
            start = start * 10 + d
        slot = np.int64(h & np.uint64(dmask))
        while seen_at[slot] >= 0:
            if seen_hash[slot] == h and _same_bytes(
                line, seen_at[slot], seen_end[slot], line, t0, t1
            ):
                return count, off_grid, 2, t0, t1, seen_at[slot], seen_end[slot]
            slot = (slot + 1) & dmask
        seen_hash[slot] = h
        seen_at[slot] = t0
        seen_end[slot] = t1
        leading_zero = digits > 1 and line[colon + 1] == 48
        if leading_zero or start % segment_size != 0:
            off_grid += 1
        code = -1
        if label >= 0 and not leading_zero and start < start_range:
            vslot = np.int64(id_hash & np.uint64(vmask))
            while videos[vslot] >= 0:
                v = videos[vslot]
                if _same_bytes(names, offsets[v], offsets[v + 1], line, t0, colon):
                    key = (v * start_range + start) * class_range + label
                    pslot = _slot(key, pmask)
                    while keys[pslot] >= 0:
                        if keys[pslot] == key:
                            code = key_codes[pslot]
                            break
                        pslot = (pslot + 1) & pmask
                    break
                vslot = (vslot + 1) & vmask
        codes[count] = code
        count += 1
    return count, off_grid, 0, 0, 0, 0, 0


@dataclass(frozen=True)
class LineMatch:
    """The entries of one class line: codes int8 ``[entries]`` in submission order, and
    how many were off the segment grid."""

    codes: np.ndarray
    off_grid: int


class RatedIndex:
    """The rated pairs of `truth`, ready to match submission lines."""

    def __init__(self, truth: RatedPairs, segment_size: int) -> None:
        self.segment_size = segment_size
        self.names, self.offsets = video_table(truth.video_ids)
        self.start_range = int(truth.start.max(initial=0)) + 1
        self.class_range = int(truth.label.max(initial=0)) + 1
        if len(truth.video_ids) * self.start_range * self.class_range >= 2**62:
            raise SegmentError(f"{truth.where}: too many rated videos, start times and classes")
        pair_keys = (truth.video * self.start_range + truth.start) * self.class_range + truth.label
        pair_codes = np.where(truth.score > 0, POSITIVE, NEGATIVE).astype(np.int8)
        self.vmask = _table_size(len(truth.video_ids)) - 1
        self.pmask = _table_size(len(pair_keys)) - 1
        self.videos, self.keys, self.key_codes = _build_tables(
            self.names, self.offsets, self.vmask, pair_keys, pair_codes, self.pmask
        )

    def match(self, entries: bytes, label: int, where: str) -> LineMatch:
        """Codes of the entries of one line of class `label`; `where` names the line in
        errors (a malformed entry, an entry twice)."""
        line = np.frombuffer(entries, np.uint8)
        most = int(np.count_nonzero(line == 32) + np.count_nonzero(line == 9)) + 1
        codes = np.empty(most, np.int8)
        rated_label = label if 0 <= label < self.class_range else -1  # -1: no rated pair
        count, off_grid, error, a0, a1, b0, b1 = _match(
            line, self.names, self.offsets, self.videos, self.vmask, self.keys,
            self.key_codes, self.pmask, self.start_range, self.class_range,
            rated_label, self.segment_size, codes, _table_size(most) - 1,
        )  # fmt: skip
        if error == _MALFORMED:
            raise SegmentError(
                f"{where}: entry {_text(entries, a0, a1)!r} is not vid:start (a video id, a "
                "colon, the start in whole seconds)"
            )
        if error == _DUPLICATE:
            raise SegmentError(
                f"{where}: entry {_text(entries, a0, a1)!r} appears twice in the line (at "
                f"bytes {b0} and {a0}); each segment once per class"
            )
        return LineMatch(codes[:count], off_grid)


def _text(data: bytes, lo: int, hi: int) -> str:
    return data[lo : min(hi, lo + 60)].decode("utf-8", "replace")
