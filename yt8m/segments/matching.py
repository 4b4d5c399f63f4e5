"""Submission entries matched against the rated pairs, one class line at a time, in one
compiled pass over its bytes (successors.md §2: entries are strings ``vid:start``; a
rated pair is found by string equality).

`RatedIndex.match` walks a line's entries (separated by runs of spaces or tabs; any byte
up to 32 separates) and returns each one's code, `POSITIVE`/`NEGATIVE`/`UNRATED`
(`yt8m.segments.map_at_k`), in submission order, checking each entry on the way:

* an entry that is not ``vid:start`` (a non-empty id, a colon, decimal digits; the id is
  what precedes the last colon) is an error naming it;
* an entry twice in one line is an error naming it (it would count twice);
* a start that is not a multiple of the segment size, or is written with leading zeros,
  names no segment that inference writes: counted (``off_grid``) and looked up as written
  (a leading-zero start never equals a rated id).

`RatedIndex` holds the rated pairs as strings ``vid:start`` grouped by class, with their
FNV-1a hashes. A line's class gets a small hash table of its pairs and a bit map of their
hash bits, which stay in cache while the line's entries are hashed: most entries stop at
one bit test, the others are looked up (a hit is verified byte by byte). Repeats are found
from the entries' hashes: partitioned by their top bits, each part checked in a small hash
set; a line with two equal hashes is checked by its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yt8m.compiled import kernel
from yt8m.segments.errors import SegmentError
from yt8m.segments.ground_truth import RatedPairs
from yt8m.segments.map_at_k import NEGATIVE, POSITIVE
from yt8m.segments.submission import format_tokens, video_table

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)
_MALFORMED = 1


@kernel
def _token_hash(data, lo, hi):  # pragma: no cover - compiled
    """FNV-1a of data[lo:hi], lowest bit set (0 marks an empty slot), as `_match` reads it."""
    h = _FNV_OFFSET
    for i in range(lo, hi):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h | np.uint64(1)


@kernel
def _hashes(data, at, end):  # pragma: no cover - compiled
    out = np.empty(len(at), np.uint64)
    for i in range(len(at)):
        out[i] = _token_hash(data, at[i], end[i])
    return out


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
    line, pair_bytes, pair_at, pair_end, pair_hashes, pair_codes, remainders, codes, hashes
):
    """Codes of the entries of `line` for one class, whose rated pairs are the strings
    pair_bytes[pair_at[p]:pair_end[p]] (`_token_hash`es `pair_hashes`, `pair_codes`);
    ``remainders[r, d]`` = ``(10 r + d) % segment_size`` (no division per entry; one row
    when the size divides 10: the last digit decides). Each
    entry's hash goes to `hashes` (for `_repeated_hash`). Returns (entries, off_grid,
    error, a0, a1): error 1 = line[a0:a1] is not vid:start."""
    pairs = len(pair_at)
    pmask = 31
    while pmask + 1 < 2 * pairs:
        pmask = 2 * pmask + 1
    table = np.zeros(pmask + 1, np.uint64)  # the hash, 0 = empty (hashes are odd)
    where = np.empty(pmask + 1, np.int64)
    # a bit map of the pairs' hash bits, 64 bits a pair: most entries stop at one bit test
    bits = 1 << 12
    while bits < 64 * pairs:
        bits *= 2
    present = np.zeros(bits // 64, np.uint64)
    low = np.uint64(bits - 1)
    for p in range(pairs):
        slot = np.int64(pair_hashes[p] & np.uint64(pmask))
        while table[slot] != 0:
            slot = (slot + 1) & pmask
        table[slot] = pair_hashes[p]
        where[slot] = p
        b = (pair_hashes[p] >> np.uint64(20)) & low
        present[b >> np.uint64(6)] |= np.uint64(1) << (b & np.uint64(63))
    n = len(line)
    i = 0
    count = 0
    off_grid = 0
    while i < n:
        byte = line[i]
        if byte <= 32:  # a separator (space or tab; other control bytes end an entry too)
            i += 1
            continue
        t0 = i
        h = _FNV_OFFSET
        while i < n and line[i] > 32:
            h = (h ^ np.uint64(line[i])) * _FNV_PRIME
            i += 1
        # the start: the digits that end the entry, after its last colon
        colon = i - 1
        while colon > t0 and np.uint64(line[colon]) - np.uint64(48) <= 9:
            colon -= 1
        digits = i - colon - 1
        if colon <= t0 or line[colon] != 58 or digits < 1 or digits > 12:
            return count, off_grid, _MALFORMED, t0, i
        rest = 0
        for j in range(colon + 1 if len(remainders) > 1 else i - 1, i):
            rest = remainders[rest, line[j] - 48]
        if rest or (digits > 1 and line[colon + 1] == 48):
            off_grid += 1
        h |= np.uint64(1)
        code = -1
        b = (h >> np.uint64(20)) & low
        if present[b >> np.uint64(6)] & (np.uint64(1) << (b & np.uint64(63))):
            slot = np.int64(h & np.uint64(pmask))
            while table[slot] != 0:
                if table[slot] == h:
                    p = where[slot]
                    if _same_bytes(pair_bytes, pair_at[p], pair_end[p], line, t0, i):
                        code = pair_codes[p]
                        break
                slot = (slot + 1) & pmask
        codes[count] = code
        hashes[count] = h
        count += 1
    return count, off_grid, 0, 0, 0


@kernel
def _repeated_hash(hashes):  # pragma: no cover - compiled
    """Whether two entries have equal hashes. The hashes are partitioned by their top
    bits (one counting pass, one scatter), then each part, about 64 hashes, is checked in
    a small hash set that stays in the L1 cache."""
    count = len(hashes)
    shift = np.uint64(64)
    parts = 1
    while parts * 64 < count:
        parts *= 2
        shift -= np.uint64(1)
    starts = np.zeros(parts + 1, np.int64)
    for i in range(count):
        starts[np.int64(hashes[i] >> shift) + 1 if parts > 1 else 1] += 1
    for k in range(parts):
        starts[k + 1] += starts[k]
    fill = starts[:-1].copy()
    grouped = np.empty(count, np.uint64)
    for i in range(count):
        k = np.int64(hashes[i] >> shift) if parts > 1 else 0
        grouped[fill[k]] = hashes[i]
        fill[k] += 1
    table = np.zeros(1024, np.uint64)
    for k in range(parts):
        size = starts[k + 1] - starts[k]
        slots = 16
        while slots < 2 * size:
            slots *= 2
        if slots > len(table):
            table = np.zeros(slots, np.uint64)
        mask = slots - 1
        table[:slots] = 0
        for j in range(starts[k], starts[k + 1]):
            value = grouped[j]
            slot = np.int64((value >> np.uint64(1)) & np.uint64(mask))
            while table[slot]:
                if table[slot] == value:
                    return True
                slot = (slot + 1) & mask
            table[slot] = value
    return False


@kernel
def _bounds(line):  # pragma: no cover - compiled
    """(start, end) of every entry of `line`."""
    starts = np.empty(len(line) // 2 + 1, np.int64)
    ends = np.empty(len(line) // 2 + 1, np.int64)
    n, i, count = len(line), 0, 0
    while i < n:
        if line[i] <= 32:
            i += 1
            continue
        starts[count] = i
        while i < n and line[i] > 32:
            i += 1
        ends[count] = i
        count += 1
    return starts[:count], ends[:count]


@dataclass(frozen=True)
class LineMatch:
    """The entries of one class line: codes int8 ``[entries]`` in submission order, and
    how many were off the segment grid."""

    codes: np.ndarray
    off_grid: int


class RatedIndex:
    """The rated pairs of `truth`, grouped by class, ready to match submission lines."""

    def __init__(self, truth: RatedPairs, segment_size: int) -> None:
        self.segment_size = segment_size
        rows = 1 if 10 % segment_size == 0 else segment_size  # 5: the last digit decides
        self.remainders = (np.arange(rows)[:, None] * 10 + np.arange(10)) % segment_size
        small = truth.label.max(initial=0) < 2**16  # numpy sorts 16-bit keys by radix
        order = np.argsort(truth.label.astype(np.uint16) if small else truth.label, kind="stable")
        names, offsets = video_table(truth.video_ids)
        self.pair_bytes, self.pair_end = format_tokens(
            truth.video[order], truth.start[order], names, offsets, -1
        )
        self.pair_at = np.concatenate([[0], self.pair_end[:-1]]).astype(np.int64)
        self.pair_hashes = _hashes(self.pair_bytes, self.pair_at, self.pair_end)
        self.pair_codes = np.where(truth.score[order] > 0, POSITIVE, NEGATIVE).astype(np.int8)
        classes = int(truth.label.max(initial=-1)) + 1
        self.first = np.searchsorted(truth.label[order], np.arange(classes + 1))

    def match(self, entries: bytes | memoryview, label: int, where: str) -> LineMatch:
        """Codes of the entries of one line of class `label`; `where` names the line in
        errors (a malformed entry, an entry twice)."""
        line = np.frombuffer(entries, np.uint8)
        most = len(line) // 2 + 1  # an entry takes at least 3 bytes and a separator
        codes = np.empty(most, np.int8)
        hashes = np.empty(most, np.uint64)
        part = slice(0, 0)
        if 0 <= label < len(self.first) - 1:
            part = slice(self.first[label], self.first[label + 1])
        count, off_grid, error, a0, a1 = _match(
            line, self.pair_bytes, self.pair_at[part], self.pair_end[part],
            self.pair_hashes[part], self.pair_codes[part], self.remainders, codes, hashes,
        )  # fmt: skip
        if error == _MALFORMED:
            raise SegmentError(
                f"{where}: entry {_text(entries, a0, a1)!r} is not vid:start (a video id, a "
                "colon, the start in whole seconds)"
            )
        if _repeated_hash(hashes[:count]):  # two equal hashes: the bytes decide
            starts, ends = _bounds(line)
            repeat = _first_repeat(entries, starts, ends)
            if repeat >= 0:
                raise SegmentError(_twice(where, entries, starts[repeat], ends[repeat]))
        return LineMatch(codes[:count], off_grid)


def _first_repeat(entries: bytes | memoryview, starts: np.ndarray, ends: np.ndarray) -> int:
    """The first entry that repeats an earlier one, or -1 (exact, by the bytes)."""
    seen: set[bytes] = set()
    for i, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        token = bytes(entries[lo:hi])
        if token in seen:
            return i
        seen.add(token)
    return -1


def _twice(where: str, entries: bytes | memoryview, lo: int, hi: int) -> str:
    return (
        f"{where}: entry {_text(entries, lo, hi)!r} appears twice in the line; each segment "
        "once per class"
    )


def _text(data: bytes | memoryview, lo: int, hi: int) -> str:
    return bytes(data[lo : min(hi, lo + 60)]).decode("utf-8", "replace")
