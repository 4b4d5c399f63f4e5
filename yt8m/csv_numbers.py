"""Text <-> numbers for submission lines (fidelity.md §6 files), fast and exact.

`parse_pair_lines` reads a block of `id,label confidence label confidence ...` lines in
one compiled pass when every line has the plain shape: an id of printable ASCII without
spaces or commas, then pairs of a label (1 to 10 digits, at most 2**31 - 1) and a
confidence (digits with an optional fraction, 15 digits at most, e.g. `%f` or `%.5f`),
single spaces between tokens, `\n` after the last one. Anything else (signs, exponents,
tabs, `\r`, empty lines, non-ASCII ids) returns None, and the caller reads the block with
its general, validating reader. The values are exact: a confidence of digits `m` with
`f` of them after the dot is the integer m (below 10**15, exact in float64) divided by
10**f (exact for f <= 22), and that one correctly rounded division is Python's
float(token).

`format_pair_lines` writes ranked pairs as `%d %f` would, assembling all lines of a
block in one byte matrix; values too close to a rounding tie are formatted by Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yt8m.compiled import kernel

_MAX_ID = 256  # longer ids go to the general reader
_MAX_LABEL = 2**31 - 1
_MAX_DIGITS = 15  # of a confidence: below 10**15 < 2**53, exact in float64
_POWERS_OF_TEN = 10.0 ** np.arange(_MAX_DIGITS + 1)  # exact in float64


@dataclass
class ParsedLines:
    """n lines: ids [n] ('S', ASCII), counts [n] int64, labels / confidences [P]."""

    ids: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray


def parse_pair_lines(data: np.ndarray, ends: np.ndarray) -> ParsedLines | None:
    """The lines data[: ends[-1] + 1] (uint8; ends: the positions of their newlines,
    ascending, n >= 1), or None when a line is not of the plain shape."""
    ok, table, counts, labels, confidences = _parse(data, ends, _POWERS_OF_TEN)
    if not ok:
        return None
    return ParsedLines(table.view(f"S{table.shape[1]}").ravel(), counts, labels, confidences)


@kernel
def _digits(data, pos, value):
    """Append the decimal digits at data[pos:] (up to a non-digit) to `value`:
    (value * 10**count + digits, count, next position). Past 18 digits the value
    wraps: callers reject such counts."""
    start = pos
    while True:
        digit = np.int64(data[pos]) - 48
        if digit < 0 or digit > 9:
            return value, pos - start, pos
        value = value * 10 + digit
        pos += 1


@kernel
def _percent_f(data, pos, end):
    """The micro-units of a `%f` confidence below 10 (`d.dddddd`, then the line's end or
    a space) at data[pos:], or -1 when the bytes there are not of that shape."""
    if pos + 8 > end or data[pos + 1] != 46 or (pos + 8 < end and data[pos + 8] != 32):
        return -1
    d0, d1, d2, d3 = data[pos] - 48, data[pos + 2] - 48, data[pos + 3] - 48, data[pos + 4] - 48
    d4, d5, d6 = data[pos + 5] - 48, data[pos + 6] - 48, data[pos + 7] - 48
    if min(d0, d1, d2, d3, d4, d5, d6) < 0 or max(d0, d1, d2, d3, d4, d5, d6) > 9:
        return -1
    return ((d0 * 10 + d1) * 100 + d2 * 10 + d3) * 1000 + d4 * 100 + d5 * 10 + d6


@kernel
def _parse(data, ends, powers):
    """parse_pair_lines' pass: (ok, id table uint8 [n, width] zero-padded, counts [n],
    labels [P] int64, confidences [P] float64). Every line ends in a newline, so digit
    runs stop at the line's end."""
    n = ends.size
    stop = ends[n - 1] + 1
    spaces = 0
    for i in range(stop):
        spaces += data[i] == 32
    most_pairs = (spaces + n) // 2  # a line of p pairs holds 2p - 1 spaces
    id_starts = np.empty(n, np.int64)
    id_lengths = np.empty(n, np.int64)
    counts = np.empty(n, np.int64)
    labels = np.empty(most_pairs, np.int64)
    confidences = np.empty(most_pairs, np.float64)
    failed = (False, np.zeros((0, 0), np.uint8), counts[:0], labels[:0], confidences[:0])
    pairs = 0
    pos = 0
    for line in range(n):
        end = ends[line]
        start = pos
        printable = True
        while pos < end and data[pos] != 44:  # the id, up to the comma
            printable &= 32 < data[pos] < 127
            pos += 1
        if not printable or pos == end or pos == start or pos - start > _MAX_ID:
            return failed
        id_starts[line] = start
        id_lengths[line] = pos - start
        pos += 1
        first = pairs
        while True:
            label, count, pos = _digits(data, pos, 0)
            if count == 0 or count > 10 or label > _MAX_LABEL or data[pos] != 32:
                return failed
            pos += 1
            micro = _percent_f(data, pos, end)
            if micro >= 0:  # the common case, written by %f
                confidence = micro / 1e6
                pos += 8
            else:
                mantissa, count, pos = _digits(data, pos, 0)
                fraction = 0
                if count and data[pos] == 46:  # '.'
                    mantissa, fraction, pos = _digits(data, pos + 1, mantissa)
                if count == 0 or count + fraction > _MAX_DIGITS:
                    return failed
                confidence = mantissa / powers[fraction]
            if pairs == most_pairs:
                return failed
            labels[pairs] = label
            confidences[pairs] = confidence
            pairs += 1
            if pos == end:
                break
            if data[pos] != 32:
                return failed
            pos += 1
        counts[line] = pairs - first
        pos = end + 1
    width = id_lengths.max()
    table = np.zeros((n, width), np.uint8)
    for line in range(n):
        table[line, : id_lengths[line]] = data[id_starts[line] : id_starts[line] + id_lengths[line]]
    return True, table, counts, labels[:pairs], confidences[:pairs]


def _digit_columns(values: np.ndarray, out: np.ndarray, zeros: bool = False) -> None:
    """ASCII digits of non-negative int64 `values` [...] right-aligned in out[..., w]
    (uint8); leading positions get 0 (removed later), or '0' when `zeros`."""
    width = out.shape[-1]
    for column in range(width):
        power = 10 ** (width - 1 - column)
        digit = (values // power) % 10 + ord("0")
        keep = zeros or column == width - 1
        out[..., column] = digit if keep else np.where(values >= power, digit, 0)


def format_pair_lines(ids: np.ndarray, labels: np.ndarray, values: np.ndarray) -> bytes | None:
    """`id,label value label value ...\\n` for every row, as `%s,` + `%d %f` pairs.

    ids: [n] 'S' (no NUL bytes); labels: [n, k] int64, a row may end in padding (-1);
    values: [n, k] float64. None when a written value is not in [0, 1000) (negative,
    -0.0, NaN, large): the caller formats those rows itself.
    """
    n, k = labels.shape
    valid = labels >= 0
    written = values[valid]
    if not ((written >= 0) & (written < 1000) & ~np.signbit(written)).all():
        return None
    scaled = written * 1e6  # within 6e-8 of the exact product (< 1e9)
    micro = np.rint(scaled)
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    if near_tie.any():  # let Python round these exactly (half-even on the binary value)
        micro[near_tie] = [float(f"{v:f}".replace(".", "")) for v in written[near_tie].tolist()]
    micro_all = np.zeros((n, k), dtype=np.int64)
    micro_all[valid] = micro.astype(np.int64)
    integer, fraction = np.divmod(micro_all, 10**6)
    label_width = len(str(max(int(labels.max(initial=0)), 0)))
    integer_width = len(str(int(integer.max(initial=0))))
    field = 1 + label_width + 1 + integer_width + 1 + 6  # ' ' label ' ' int '.' fraction
    id_width = ids.dtype.itemsize
    line = np.zeros((n, id_width + 1 + k * field + 1), dtype=np.uint8)
    line[:, :id_width] = ids.view(np.uint8).reshape(n, id_width)
    line[:, id_width] = ord(",")
    line[:, -1] = ord("\n")
    pairs = line[:, id_width + 1 : -1].reshape(n, k, field)
    pairs[:, 1:, 0] = ord(" ")
    _digit_columns(np.maximum(labels, 0), pairs[:, :, 1 : 1 + label_width])
    at = 1 + label_width
    pairs[:, :, at] = ord(" ")
    _digit_columns(integer, pairs[:, :, at + 1 : at + 1 + integer_width])
    at += 1 + integer_width
    pairs[:, :, at] = ord(".")
    _digit_columns(fraction, pairs[:, :, at + 1 :], zeros=True)
    pairs[~valid] = 0
    return line[line != 0].tobytes()
