"""The fast path for frame-level records of the regular YouTube-8M layout (one compiled pass).

`read_regular_frame_record` walks a SequenceExample (wire format: see `yt8m.data.wire`)
and, when it has the layout that TensorFlow writes for YouTube-8M, copies the frames of
the wanted feature lists straight into the caller's rows and returns the id span, the
labels and the frame count. The layout accepted:

- the SequenceExample holds its context (field 1) and feature lists (field 2) once each,
  in either order, and nothing else;
- every map entry holds its key, then its value; no key appears twice;
- the id (``video_id`` or ``id``) is a bytes list of one value; ``labels`` an int64 list,
  packed or not, of values in ``[0, num_classes)``; other context features are skipped
  (the 2019 segment features are only reported, for the caller to decode);
- every Feature of a wanted feature list is one bytes value of the feature's size, and
  all wanted lists have the same number of frames.

Anything else (a missing feature, another frame size, an unknown field, a varint that
does not fit 63 bits, a label out of range) returns None: the caller then decodes the
record with the general decoder, which reads every valid encoding and names each defect.
The fast path therefore never decides what a record means differently from the general
one; it only decides whether it can take the record.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from yt8m.compiled import kernel

_CONTEXT_KEYS = (b"video_id", b"id", b"labels", b"segment_labels")
_VIDEO_ID, _ID, _LABELS, _SEGMENTS = range(4)


class RegularRecord(NamedTuple):
    """What the fast path read: the id's byte span in the payload, the labels, the frames
    written to ``out[:num_frames]`` and whether 2019 segment features are present."""

    id_start: int
    id_end: int
    labels: np.ndarray  # int64 [L]
    num_frames: int
    has_segments: bool


@functools.lru_cache(maxsize=16)
def _key_table(features: tuple[tuple[str, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The context keys, then the feature names, as one byte array; the start of each key
    [K + 1]; the feature sizes [F]."""
    keys = [*_CONTEXT_KEYS, *(name.encode() for name, _ in features)]
    starts = np.cumsum([0, *map(len, keys)]).astype(np.int64)
    sizes = np.array([size for _, size in features], dtype=np.int64)
    return np.frombuffer(b"".join(keys), np.uint8), starts, sizes


def read_regular_frame_record(
    payload: np.ndarray,
    features: tuple[tuple[str, int], ...],
    max_frames: int,
    num_classes: int,
    out: np.ndarray,
) -> RegularRecord | None:
    """Read one record of the regular layout (module docstring) or return None.

    payload: uint8 [N]; out: uint8 [>= max_frames, sum(sizes)], whose
    rows ``[:num_frames]`` receive the frames, the features side by side in `features`
    order (nothing is written when None is returned).
    """
    keys, key_starts, sizes = _key_table(features)
    ok, id_start, id_end, has_segments, frames, labels, firsts, steps = _read(
        payload, keys, key_starts, sizes, num_classes
    )
    if not ok:
        return None
    num_frames = min(frames, max_frames)
    column = 0
    for size, first, step in zip(sizes.tolist(), firsts.tolist(), steps.tolist(), strict=True):
        if num_frames:  # one strided copy per feature (numpy copies at memory speed)
            values = np.ndarray((num_frames, size), np.uint8, payload, first, (step, 1))
            out[:num_frames, column : column + size] = values
        column += size
    return RegularRecord(id_start, id_end, labels, num_frames, has_segments)


@kernel
def _varint(buf, pos, end):
    """(value, next position) of the varint at buf[pos:end]; (-1, -1) when it is
    truncated or does not fit 63 bits."""
    value = 0
    shift = 0
    while pos < end and shift < 63:
        byte = np.int64(buf[pos])
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value, pos) if value >= 0 else (-1, -1)
        shift += 7
    return -1, -1


@kernel
def _length_field(buf, pos, end, number):
    """(start, stop) of the length-delimited field `number` at buf[pos:end]; (-1, -1)
    when another field is there or it runs past `end`."""
    if pos >= end or buf[pos] != (number << 3 | 2):
        return -1, -1
    size, start = _varint(buf, pos + 1, end)
    if start < 0 or size > end - start:
        return -1, -1
    return start, start + size


@kernel
def _sole_field(buf, start, stop, number):
    """(start, stop) of the length-delimited field `number` when it fills buf[start:stop]
    exactly; (-1, -1) otherwise."""
    inner_start, inner_stop = _length_field(buf, start, stop, number)
    return (inner_start, inner_stop) if inner_stop == stop else (-1, -1)


@kernel
def _map_entry(buf, pos, end, keys, key_starts):
    """A map entry at buf[pos:end] (key, then value, nothing else): (index of its key in
    the key table or -2 for another key, value start, value stop); index -1 when the
    entry is not of that shape."""
    key_start, key_stop = _length_field(buf, pos, end, 1)
    if key_start < 0:
        return -1, 0, 0
    value_start, value_stop = _sole_field(buf, key_stop, end, 2)
    if value_start < 0:
        return -1, 0, 0
    length = key_stop - key_start
    for index in range(key_starts.size - 1):
        if key_starts[index + 1] - key_starts[index] == length:
            same = True
            for i in range(length):
                same &= buf[key_start + i] == keys[key_starts[index] + i]
            if same:
                return index, value_start, value_stop
    return -2, value_start, value_stop


@kernel
def _next_entry(buf, pos, stop, keys, key_starts, seen):
    """The map entry at buf[pos:stop]: (index of its key or -2, value start, value stop,
    position after the entry); index -1 when the entry is irregular or its key was seen
    before (seen [K] marks the keys met)."""
    entry_start, entry_stop = _length_field(buf, pos, stop, 1)
    if entry_start < 0:
        return -1, 0, 0, 0
    key, value_start, value_stop = _map_entry(buf, entry_start, entry_stop, keys, key_starts)
    if key >= 0:
        if seen[key]:
            return -1, 0, 0, 0
        seen[key] = True
    return key, value_start, value_stop, entry_stop


@kernel
def _labels(buf, start, stop, num_classes):
    """The labels of an int64-list Feature at buf[start:stop] ([L] int64), or None-like
    (an array of one -1) when it is not a valid list of labels in [0, num_classes)."""
    bad = np.full(1, -1, np.int64)
    labels = np.empty(stop - start, np.int64)
    count = 0
    if start == stop:  # a Feature with no list: no labels
        return labels[:0]
    list_start, list_stop = _sole_field(buf, start, stop, 3)
    if list_start < 0:
        return bad
    pos = list_start
    while pos < list_stop:
        if buf[pos] == 0x0A:  # packed values
            values_start, values_stop = _length_field(buf, pos, list_stop, 1)
            if values_start < 0:
                return bad
            pos = values_start
            while pos < values_stop:
                labels[count], pos = _varint(buf, pos, values_stop)
                if pos < 0 or labels[count] >= num_classes:
                    return bad
                count += 1
        elif buf[pos] == 0x08:  # one unpacked value
            labels[count], pos = _varint(buf, pos + 1, list_stop)
            if pos < 0 or labels[count] >= num_classes:
                return bad
            count += 1
        else:
            return bad
    return labels[:count]


@kernel
def _frame_spacing(buf, start, stop, size):
    """A FeatureList at buf[start:stop] whose Features are each one bytes value of `size`
    bytes, all with headers of one length: (frames, position of the first value, bytes
    from one value to the next); frames -1 for any other list."""
    frames = 0
    first = step = 0
    pos = start
    while pos < stop:
        feature_start, feature_stop = _length_field(buf, pos, stop, 1)
        if feature_start < 0:
            return -1, 0, 0
        list_start, list_stop = _sole_field(buf, feature_start, feature_stop, 1)
        value_start, value_stop = _sole_field(buf, list_start, list_stop, 1)
        if value_start < 0 or value_stop - value_start != size:
            return -1, 0, 0
        if frames == 0:
            first = value_start
            step = feature_stop - pos
        elif value_start != first + frames * step:
            return -1, 0, 0
        frames += 1
        pos = feature_stop
    return frames, first, step


@kernel
def _irregular():
    """What `_read` returns for a record it does not take."""
    empty = np.zeros(0, np.int64)
    return False, 0, 0, False, 0, empty, empty, empty


@kernel
def _read(buf, keys, key_starts, sizes, num_classes):
    """read_regular_frame_record's walk: (ok, id start, id stop, has segments, frames,
    labels, and per feature the position of its first value and the step to the next)."""
    end = buf.size
    if sizes.size == 0:
        return _irregular()
    context = (-1, -1)
    lists = (-1, -1)
    pos = 0
    while pos < end:  # the SequenceExample: context and feature lists, once each
        if buf[pos] == 0x0A and context[0] < 0:
            context = _length_field(buf, pos, end, 1)
            pos = context[1]
        elif buf[pos] == 0x12 and lists[0] < 0:
            lists = _length_field(buf, pos, end, 2)
            pos = lists[1]
        else:
            return _irregular()
        if pos < 0:
            return _irregular()
    id_start = id_stop = -1
    labels = np.zeros(0, np.int64)
    has_segments = False
    seen = np.zeros(key_starts.size - 1, np.bool_)
    pos = context[0]
    while 0 <= pos < context[1]:
        key, value_start, value_stop, pos = _next_entry(
            buf, pos, context[1], keys, key_starts, seen
        )
        if key == -1:
            return _irregular()
        if key == _VIDEO_ID or key == _ID:
            if id_start >= 0:
                return _irregular()  # both keys: the general decoder decides
            bytes_start, bytes_stop = _sole_field(buf, value_start, value_stop, 1)
            id_start, id_stop = _sole_field(buf, bytes_start, bytes_stop, 1)
            if id_start < 0:
                return _irregular()
        elif key == _LABELS:
            labels = _labels(buf, value_start, value_stop, num_classes)
            if labels.size == 1 and labels[0] < 0:
                return _irregular()
        elif key == _SEGMENTS:
            has_segments = True
        elif key >= _SEGMENTS:
            return _irregular()  # a feature list's name in the context
    if id_start < 0:
        return _irregular()
    frames = np.full(sizes.size, -1, np.int64)
    firsts = np.zeros(sizes.size, np.int64)
    steps = np.zeros(sizes.size, np.int64)
    pos = lists[0]
    while 0 <= pos < lists[1]:
        key, value_start, value_stop, pos = _next_entry(buf, pos, lists[1], keys, key_starts, seen)
        if key == -1:
            return _irregular()
        feature = key - _SEGMENTS - 1
        if feature >= 0:
            frames[feature], firsts[feature], steps[feature] = _frame_spacing(
                buf, value_start, value_stop, sizes[feature]
            )
        elif key >= 0:
            return _irregular()  # a context key among the feature lists
    if frames.min() < 0 or frames.max() != frames.min():
        return _irregular()
    return True, id_start, id_stop, has_segments, frames[0], labels, firsts, steps
