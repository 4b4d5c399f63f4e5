"""`tf.train.Example` and `tf.train.SequenceExample` at the protobuf wire level.

The messages (tensorflow/core/example/{example,feature}.proto)::

    Example         { Features features = 1; }
    SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
    Features        { map<string, Feature> feature = 1; }
    FeatureLists    { map<string, FeatureList> feature_list = 1; }
    FeatureList     { repeated Feature feature = 1; }
    Feature         { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                                   Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1; }
    Int64List { repeated int64 value = 1; }

A decoded `Feature` is a ``list[bytes]`` (bytes_list), a float32 array (float_list) or an
int64 array (int64_list); a Feature with no list set decodes as ``[]``. The decoder accepts
any valid encoding: fields in any order, packed or unpacked numbers, repeated sub-messages
merged and the last map entry of a key winning (protobuf's rules), unknown fields (groups
included) skipped, a known field with an unexpected wire type treated as unknown. Anything
malformed raises `WireFormatError`, never another exception.

`fixed_bytes_frames` is the fast path for the YouTube-8M frame layout: every Feature of a
FeatureList holding one bytes value of the same size puts the frames at a fixed stride, so
they are one strided numpy view of the payload. Any other layout returns None and the
caller falls back to `decode_feature_list`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from yt8m.data.tfrecord import RecordError

Feature = list[bytes] | np.ndarray
Buffer = bytes | memoryview

_MASK64 = (1 << 64) - 1
_MAX_GROUP_DEPTH = 32
_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5


class WireFormatError(RecordError):
    """A payload that is not a valid protobuf encoding of the expected message."""


# ---- decoding ------------------------------------------------------------------------


def _varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at `pos`; returns ``(value mod 2**64, next position)``."""
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError(f"varint longer than 10 bytes at byte {pos - 10}")
    raise WireFormatError(f"truncated varint at byte {pos}")


def _skip_group(buf: Buffer, pos: int, end: int, number: int, depth: int) -> int:
    """Skip an (unknown) group opened for field `number`; returns the position after it."""
    if depth > _MAX_GROUP_DEPTH:
        raise WireFormatError(f"groups nested deeper than {_MAX_GROUP_DEPTH} at byte {pos}")
    while pos < end:
        key, pos = _varint(buf, pos, end)
        if key & 7 == _END_GROUP:
            if key >> 3 != number:
                raise WireFormatError(f"mismatched end of group at byte {pos}")
            return pos
        pos = _skip_value(buf, pos, end, key, depth)
    raise WireFormatError(f"unterminated group (field {number})")


def _skip_value(buf: Buffer, pos: int, end: int, key: int, depth: int = 0) -> int:
    wire = key & 7
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _LENGTH:
        size, pos = _varint(buf, pos, end)
        stop = pos + size
    elif wire == _FIXED64:
        stop = pos + 8
    elif wire == _FIXED32:
        stop = pos + 4
    elif wire == _START_GROUP:
        return _skip_group(buf, pos, end, key >> 3, depth + 1)
    else:
        raise WireFormatError(f"invalid wire type {wire} at byte {pos}")
    if stop > end:
        raise WireFormatError(f"field runs past the end of its message at byte {pos}")
    return stop


def _fields(buf: Buffer, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field number, wire type, start, stop)`` of each field in ``buf[pos:end]``.

    For length-delimited fields ``start:stop`` is the content; for the others it is the
    encoded value (a varint's bytes, 4 or 8 fixed bytes); groups are skipped.
    """
    while pos < end:
        key = buf[pos]  # one-byte keys and lengths (the common case) without a call
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        if wire == _LENGTH:
            if pos < end and buf[pos] < 0x80:
                size, start = buf[pos], pos + 1
            else:
                size, start = _varint(buf, pos, end)
            pos = start + size
            if pos > end:
                raise WireFormatError(f"field runs past the end of its message at byte {start}")
            yield number, wire, start, pos
        elif wire == _START_GROUP or wire == _END_GROUP:
            if wire == _END_GROUP:
                raise WireFormatError(f"end of group without a start at byte {pos}")
            pos = _skip_group(buf, pos, end, number, 1)
        else:
            start, pos = pos, _skip_value(buf, pos, end, key)
            yield number, wire, start, pos


def _decode_int64s(buf: Buffer, pos: int, end: int, out: list[int]) -> None:
    while pos < end:
        value, pos = _varint(buf, pos, end)
        out.append(value)


def _int64_array(values: list[int]) -> np.ndarray:
    """Unsigned 64-bit wire values -> int64 (two's complement, as protobuf reads them)."""
    return np.array(values, dtype=np.uint64).view(np.int64)


def _decode_feature(buf: Buffer, pos: int, end: int) -> Feature:
    kind = 0
    parts: list = []
    for number, wire, start, stop in _fields(buf, pos, end):
        if wire != _LENGTH or number not in (1, 2, 3):
            continue
        if number != kind:  # another member of the oneof replaces the previous one
            kind, parts = number, []
        for value_number, value_wire, vstart, vstop in _fields(buf, start, stop):
            if value_number != 1:
                continue
            if number == 1 and value_wire == _LENGTH:
                parts.append(bytes(buf[vstart:vstop]))
            elif number == 2 and value_wire == _LENGTH:
                if (vstop - vstart) % 4:
                    raise WireFormatError(f"packed floats of {vstop - vstart} bytes at {vstart}")
                parts.append(np.frombuffer(buf, "<f4", (vstop - vstart) // 4, vstart))
            elif number == 2 and value_wire == _FIXED32:
                parts.append(np.frombuffer(buf, "<f4", 1, vstart))
            elif number == 3 and value_wire == _LENGTH:
                _decode_int64s(buf, vstart, vstop, parts)
            elif number == 3 and value_wire == _VARINT:
                parts.append(_varint(buf, vstart, vstop)[0])
    if kind == 2:
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if kind == 3:
        return _int64_array(parts)
    return parts


def _map_entry(buf: Buffer, pos: int, end: int) -> tuple[str, int, int]:
    """A map entry's key and the span of its value (empty when absent)."""
    key = b""
    vstart = vstop = end
    for number, wire, start, stop in _fields(buf, pos, end):
        if number == 1 and wire == _LENGTH:
            key = bytes(buf[start:stop])
        elif number == 2 and wire == _LENGTH:
            vstart, vstop = start, stop
    try:
        return key.decode("utf-8"), vstart, vstop
    except UnicodeDecodeError:
        raise WireFormatError(f"feature name {key!r} is not UTF-8") from None


def _decode_features(
    buf: Buffer, pos: int, end: int, out: dict[str, Feature], keys: frozenset[str] | None
) -> None:
    for number, wire, start, stop in _fields(buf, pos, end):
        if number == 1 and wire == _LENGTH:
            name, vstart, vstop = _map_entry(buf, start, stop)
            if keys is None or name in keys:
                out[name] = _decode_feature(buf, vstart, vstop)
            else:
                out[name] = []


def decode_example(buf: Buffer) -> dict[str, Feature]:
    """An Example's features: ``{name: Feature}``."""
    return decode_context(buf)


def decode_context(buf: Buffer, keys: Sequence[str] | None = None) -> dict[str, Feature]:
    """Field 1 of an Example or a SequenceExample (its features / context), alone.

    With `keys`, only those features' values are decoded; the others appear with ``[]``
    (so their names can still be listed). The feature lists of a SequenceExample are
    skipped without being decoded.
    """
    wanted = None if keys is None else frozenset(keys)
    out: dict[str, Feature] = {}
    for number, wire, start, stop in _fields(buf, 0, len(buf)):
        if number == 1 and wire == _LENGTH:
            _decode_features(buf, start, stop, out, wanted)
    return out


def split_sequence_example(buf: Buffer) -> tuple[dict[str, Feature], dict[str, memoryview]]:
    """A SequenceExample's context, decoded, and its feature lists as raw FeatureList bytes.

    Hand each raw FeatureList to `fixed_bytes_frames` (fast) or `decode_feature_list`.
    """
    view = memoryview(buf)
    context: dict[str, Feature] = {}
    lists: dict[str, memoryview] = {}
    for number, wire, start, stop in _fields(view, 0, len(view)):
        if wire != _LENGTH:
            continue
        if number == 1:
            _decode_features(view, start, stop, context, None)
        elif number == 2:
            for entry_number, entry_wire, estart, estop in _fields(view, start, stop):
                if entry_number == 1 and entry_wire == _LENGTH:
                    name, vstart, vstop = _map_entry(view, estart, estop)
                    lists[name] = view[vstart:vstop]
    return context, lists


def decode_feature_list(raw: Buffer) -> list[Feature]:
    """A FeatureList message -> its Features, in order."""
    return [
        _decode_feature(raw, start, stop)
        for number, wire, start, stop in _fields(raw, 0, len(raw))
        if number == 1 and wire == _LENGTH
    ]


def decode_sequence_example(buf: Buffer) -> tuple[dict[str, Feature], dict[str, list[Feature]]]:
    """A SequenceExample -> ``(context {name: Feature}, feature_lists {name: [Feature]})``."""
    context, raw_lists = split_sequence_example(buf)
    return context, {name: decode_feature_list(raw) for name, raw in raw_lists.items()}


def fixed_bytes_frames(raw: Buffer) -> np.ndarray | None:
    """Fast path: a FeatureList whose every Feature holds exactly one bytes value of one
    common size -> uint8 view ``[n, size]``; None when the layout is anything else."""
    end = len(raw)
    if end < 6 or raw[0] != 0x0A:
        return None
    try:
        feature_size, pos = _varint(raw, 1, end)
        feature_end = pos + feature_size
        if pos >= end or raw[pos] != 0x0A:
            return None
        list_size, pos = _varint(raw, pos + 1, end)
        if pos >= end or raw[pos] != 0x0A or pos + list_size != feature_end:
            return None
        value_size, pos = _varint(raw, pos + 1, end)
    except WireFormatError:
        return None
    if pos + value_size != feature_end or end % feature_end:
        return None
    count = end // feature_end
    rows = np.frombuffer(raw, np.uint8).reshape(count, feature_end)
    if rows[:, :pos].tobytes() != bytes(raw[:pos]) * count:  # every frame's header alike
        return None
    return rows[:, pos:]


# ---- encoding ------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_field(number: int, content: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH) + _encode_varint(len(content)) + content


def encode_feature(feature: Feature) -> bytes:
    """A Feature message: bytes values (list/tuple) or a float / integer numpy array."""
    if isinstance(feature, (list, tuple)):
        values = b"".join(_length_field(1, bytes(v)) for v in feature)
        return _length_field(1, values)
    array = np.asarray(feature)
    if array.dtype.kind == "f":
        packed = _length_field(1, array.astype("<f4").tobytes()) if array.size else b""
        return _length_field(2, packed)
    if array.dtype.kind in "iub":
        numbers = b"".join(_encode_varint(int(v)) for v in array.astype(np.int64).ravel())
        return _length_field(3, _length_field(1, numbers) if array.size else b"")
    raise TypeError(f"cannot encode a Feature from {type(feature).__name__} {array.dtype}")


def _encode_features(features: Mapping[str, Feature]) -> bytes:
    return b"".join(
        _length_field(1, _length_field(1, name.encode()) + _length_field(2, encode_feature(f)))
        for name, f in features.items()
    )


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """An Example holding `features`."""
    return _length_field(1, _encode_features(features))


def encode_fixed_bytes_frames(frames: np.ndarray) -> bytes:
    """A FeatureList of one bytes value per row of uint8 ``frames [n, size]`` (vectorised)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    size = frames.shape[1]
    value = b"\x0a" + _encode_varint(size)
    bytes_list = b"\x0a" + _encode_varint(len(value) + size)
    feature = b"\x0a" + _encode_varint(len(bytes_list) + len(value) + size)
    header = np.frombuffer(feature + bytes_list + value, np.uint8)
    rows = np.empty((frames.shape[0], len(header) + size), np.uint8)
    rows[:, : len(header)] = header
    rows[:, len(header) :] = frames
    return rows.tobytes()


def encode_sequence_example(
    context: Mapping[str, Feature], feature_lists: Mapping[str, Sequence[Feature] | np.ndarray]
) -> bytes:
    """A SequenceExample; a feature list given as a uint8 ``[n, size]`` array is encoded as
    one bytes value per row (the YouTube-8M frame layout)."""
    lists = b""
    for name, features in feature_lists.items():
        if isinstance(features, np.ndarray) and features.dtype == np.uint8 and features.ndim == 2:
            raw = encode_fixed_bytes_frames(features)
        else:
            raw = b"".join(_length_field(1, encode_feature(f)) for f in features)
        lists += _length_field(1, _length_field(1, name.encode()) + _length_field(2, raw))
    return _length_field(1, _encode_features(context)) + _length_field(2, lists)
