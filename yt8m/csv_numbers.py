"""Vectorised text <-> numbers for submission lines (fidelity.md §6 files).

`parse_pair_lines` reads a block of `id,label confidence label confidence ...` lines
at once when every line has the shape that `%d %f` writes for confidences in [0, 10):
labels of 1 to 6 digits, confidences `d.dddddd`, single spaces. Anything else (other
number shapes, signs, exponents, tabs, `\\r`, empty lines, non-ASCII ids) returns None,
and the caller reads the block with its general, validating reader. The values are
exact: a confidence `d.dddddd` is the integer `ddddddd` divided by 10**6, both exact
in float64, so the quotient is the correctly rounded float64 of the text, equal to
Python's float(token).

How: the positions of commas and dots are found by vector comparisons; each dot
anchors its pair (label ends 3 bytes before the dot, confidence spans dot-1 .. dot+6),
the 16 bytes dot-8 .. dot+7 are read as two 64-bit words, and digits are combined
eight bytes at a time (SWAR). Validation counts bytes: every byte that is not a digit
must be one of the expected ones (id bytes, comma, the space before a confidence, the
dot, the space or newline after it), so a line that passes is exactly of the shape
above.

`format_pair_lines` writes ranked pairs as `%d %f` would, assembling all lines of a
block in one byte matrix; values too close to a rounding tie are formatted by Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 16  # bytes before the data in a parse buffer (read, never interpreted)
_U = np.uint64
_ZERO = _U(0x3030303030303030)  # b"00000000"
_MAX_ID = 256  # longer ids go to the general reader
# KEEP[n]: the n high bytes of a word (the last n characters of a little-endian read)
_KEEP = np.array([((2**64 - 1) << 8 * (8 - n)) & (2**64 - 1) for n in range(9)], dtype=_U)


@dataclass
class ParsedLines:
    """n lines: ids [n] ('S', ASCII), counts [n] int64, labels / confidences [P]."""

    ids: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray


def _swar_digits(words: np.ndarray) -> np.ndarray:
    """uint64 words holding up to 8 digit values (0-9) in bytes, first digit in the low
    byte (as a little-endian read of the text) -> their decimal values (in place)."""
    words *= _U(10 * 256 + 1)
    words >>= _U(8)
    words &= _U(0x00FF00FF00FF00FF)
    words *= _U(100 * 65536 + 1)
    words >>= _U(16)
    words &= _U(0x0000FFFF0000FFFF)
    words *= _U(10000 * 2**32 + 1)
    words >>= _U(32)
    return words


def parse_pair_lines(buffer: np.ndarray, ends: np.ndarray, work: np.ndarray) -> ParsedLines | None:
    """The lines buffer[PAD : ends[-1] + 1] (ends: the positions of their newlines,
    ascending, n >= 1), or None when a line is not of the fast shape. work: bool
    scratch of at least buffer.size (reused: fresh large arrays cost page faults)."""
    stop = int(ends[-1]) + 1
    n = ends.size
    data = buffer[PAD:stop]
    flags = work[: data.size]
    commas = np.flatnonzero(np.equal(data, ord(","), out=flags)) + PAD
    dots = np.flatnonzero(np.equal(data, ord("."), out=flags)) + PAD
    starts = np.empty(n, dtype=np.int64)
    starts[0] = PAD
    starts[1:] = ends[:-1] + 1
    if commas.size != n or dots.size == 0 or not (commas > starts).all():
        return None  # commas < ends: n commas, one per line
    first = np.searchsorted(dots, commas)  # each line's first pair
    counts = np.diff(first, append=dots.size)
    if first[0] != 0 or counts.min() < 1 or not (dots[first + counts - 1] + 7 == ends).all():
        return None  # a dot before a comma, a line without pairs, or not ending a pair
    lengths = np.empty(dots.size, dtype=np.int64)  # label lengths
    np.subtract(dots[1:], dots[:-1], out=lengths[1:])
    lengths -= 10  # 'label d.dddddd ' after the previous 'd.dddddd '
    lengths[first] = dots[first] - commas - 3  # after the comma
    if lengths.min() < 1 or lengths.max() > 6:
        return None
    windows = np.ndarray((buffer.size - 15,), dtype="V16", buffer=buffer, strides=(1,))
    words = windows[dots - 8].view(_U).reshape(-1, 2)  # 'label d' '.dddddd '
    words ^= _ZERO
    low, high = words[:, 0], words[:, 1]
    space, after = (low >> _U(48)) & _U(0xFF), high >> _U(56)  # ' ' and ' ' or '\n', ^ '0'
    if not ((space == 0x10).all() and ((after == 0x10) | (after == 0x3A)).all()):
        return None
    ids, id_nondigits = _ids(buffer, starts, commas)
    nondigits = np.count_nonzero(np.less(data, ord("0"), out=flags))
    nondigits += np.count_nonzero(np.greater(data, ord("9"), out=flags))
    if ids is None or nondigits != id_nondigits + n + 3 * dots.size:
        return None
    digits = np.empty((2, dots.size), dtype=_U)
    np.left_shift(low, _U(16), out=digits[0])  # the label's last digit in the high byte
    digits[0] &= _KEEP[lengths]
    np.left_shift(high, _U(8), out=digits[1])  # 'd.dddddd' -> '0' 'd' 'dddddd'
    digits[1] &= _U(0xFFFFFFFFFFFF0000)
    digits[1] |= (low >> _U(56)) << _U(8)
    _swar_digits(digits)
    return ParsedLines(ids, counts, digits[0].view(np.int64), digits[1] / 1e6)


def _ids(
    buffer: np.ndarray, starts: np.ndarray, commas: np.ndarray
) -> tuple[np.ndarray | None, int]:
    """The ids buffer[starts:commas] as 'S' array and their count of non-digit bytes;
    None when one is empty, too long or holds a byte outside printable ASCII."""
    lengths = commas - starts
    width = int(lengths.max())
    if width > _MAX_ID:
        return None, 0
    columns = np.arange(width)
    table = buffer.take(starts[:, None] + columns, mode="clip")
    inside = columns < lengths[:, None]
    if not (((table > 32) & (table < 127)) | ~inside).all():
        return None, 0
    nondigits = int(np.count_nonzero(((table < ord("0")) | (table > ord("9"))) & inside))
    table[~inside] = 0
    return table.view(f"S{width}").ravel(), nondigits


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
