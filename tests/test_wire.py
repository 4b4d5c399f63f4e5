"""Example / SequenceExample at the wire level: any valid encoding, fast path, fuzzing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfrecord import example_pb2

from yt8m.data import wire
from yt8m.errors import YT8MError


def varint(value: int) -> bytes:
    return wire._encode_varint(value)


def field(number: int, content: bytes) -> bytes:
    """A length-delimited field written by hand."""
    return varint(number << 3 | 2) + varint(len(content)) + content


def entry(name: str, value: bytes) -> bytes:
    return field(1, field(1, name.encode()) + field(2, value))


def test_example_round_trip_and_protobuf_agrees():
    features = {
        "id": [b"vid1"],
        "labels": np.array([0, 7, 4715, -3], np.int64),
        "mean_rgb": np.linspace(-2, 2, 9, dtype=np.float32),
        "empty_floats": np.zeros(0, np.float32),
        "two_strings": [b"a", b""],
    }
    payload = wire.encode_example(features)
    decoded = wire.decode_example(payload)
    assert decoded.keys() == features.keys()
    for name, value in features.items():
        if isinstance(value, list):
            assert decoded[name] == value
        else:
            assert decoded[name].dtype == value.dtype
            np.testing.assert_array_equal(decoded[name], value)
    proto = example_pb2.Example()
    proto.ParseFromString(payload)
    assert list(proto.features.feature["labels"].int64_list.value) == [0, 7, 4715, -3]
    assert list(proto.features.feature["two_strings"].bytes_list.value) == [b"a", b""]
    again = wire.decode_example(proto.SerializeToString())
    np.testing.assert_array_equal(again["mean_rgb"], features["mean_rgb"])


def test_sequence_example_round_trip_with_general_and_fast_lists():
    frames = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7)
    context = {"video_id": [b"x"], "labels": np.array([3], np.int64)}
    lists = {"rgb": frames, "scores": [np.array([1.5], np.float32), np.array([2.0], np.float32)]}
    decoded_context, decoded_lists = wire.decode_sequence_example(
        wire.encode_sequence_example(context, lists)
    )
    assert decoded_context["video_id"] == [b"x"]
    assert [row[0] for row in decoded_lists["rgb"]] == [r.tobytes() for r in frames]
    assert [float(f[0]) for f in decoded_lists["scores"]] == [1.5, 2.0]


def test_any_field_order_unpacked_numbers_and_unknown_fields():
    """Hand-made encoding: value before key in map entries, unpacked int64 and floats,
    unknown fields of every wire type (a group included) in every message."""
    unknown = (
        varint(9 << 3 | 0) + varint(300)  # varint
        + varint(10 << 3 | 1) + b"\x00" * 8  # fixed64
        + field(11, b"junk")  # length-delimited
        + varint(12 << 3 | 5) + b"\x00" * 4  # fixed32
        + varint(13 << 3 | 3) + varint(1 << 3 | 0) + varint(5) + varint(13 << 3 | 4)  # group
    )  # fmt: skip
    int64s = field(
        3, unknown + varint(1 << 3 | 0) + varint(5) + varint(1 << 3 | 0) + varint(2**64 - 1)
    )
    floats = field(2, varint(1 << 3 | 5) + np.float32(0.25).tobytes() + unknown)
    labels_entry = field(1, field(2, int64s) + field(1, b"labels"))
    payload = unknown + field(1, unknown + labels_entry + entry("f", floats)) + unknown
    decoded = wire.decode_example(payload)
    np.testing.assert_array_equal(decoded["labels"], [5, -1])
    np.testing.assert_array_equal(decoded["f"], [0.25])
    proto = example_pb2.Example()
    proto.ParseFromString(payload)  # protobuf reads the same message
    assert list(proto.features.feature["labels"].int64_list.value) == [5, -1]
    # protobuf (upb) drops a map entry carrying unknown fields; this decoder keeps it
    with_unknown = field(1, field(1, unknown + field(2, int64s) + field(1, b"labels")))
    np.testing.assert_array_equal(wire.decode_example(with_unknown)["labels"], [5, -1])


def test_protobuf_merge_rules():
    """Repeated Features merge; the last entry of a key wins; within a Feature the last
    member of the oneof wins and a repeated member is merged."""
    first = field(1, entry("a", field(1, field(1, b"old"))) + entry("b", field(1, field(1, b"b"))))
    second = field(1, entry("a", field(3, field(1, varint(1))) + field(3, field(1, varint(2)))))
    decoded = wire.decode_example(first + second)
    assert decoded["b"] == [b"b"]
    np.testing.assert_array_equal(decoded["a"], [1, 2])
    proto = example_pb2.Example()
    proto.ParseFromString(first + second)
    assert list(proto.features.feature["a"].int64_list.value) == [1, 2]


def test_known_field_with_wrong_wire_type_is_skipped_like_protobuf():
    payload = field(1, entry("x", varint(1 << 3 | 0) + varint(7) + field(1, field(1, b"ok"))))
    assert wire.decode_example(payload) == {"x": [b"ok"]}


def test_fast_path_equals_general_path():
    frames = np.random.default_rng(0).integers(0, 256, (40, 300), dtype=np.uint8)
    raw = wire.encode_fixed_bytes_frames(frames)
    fast = wire.fixed_bytes_frames(raw)
    np.testing.assert_array_equal(fast, frames)
    general = wire.decode_feature_list(raw)
    assert [f[0] for f in general] == [r.tobytes() for r in frames]


@pytest.mark.parametrize(
    "raw",
    [
        field(1, field(1, field(1, b"abc"))) + field(1, field(1, field(1, b"abcd"))),
        field(1, field(1, field(1, b"ab") + field(1, b"cd"))) + field(1, field(1, field(1, b"ab"))),
        field(1, field(1, field(1, b"abc")) + varint(9 << 3) + varint(0)) * 2,
        field(1, field(3, field(1, varint(1)))) * 3,
        field(1, field(1, field(1, b"abc"))) + field(2, b"x"),
        b"",
    ],
    ids=["sizes differ", "two values", "unknown field", "int64 frames", "trailing field", "empty"],
)
def test_fast_path_declines_every_other_layout(raw):
    assert wire.fixed_bytes_frames(raw) is None
    wire.decode_feature_list(raw)  # the general decoder takes it


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x05abc",  # length past the end
        b"\x0a",  # truncated length
        b"\x08" + b"\xff" * 11,  # varint of 11 bytes
        b"\x00\x01",  # field number 0
        b"\x0c",  # end group without start
        b"\x0f",  # wire type 7
        b"\x0b\x08\x01",  # unterminated group
        b"\x0b" * 40,  # groups nested too deep
        field(1, entry("bad\xff", b"").replace(b"bad\xc3\xbf", b"bad\xff")),  # name not UTF-8
        field(1, entry("f", field(2, field(1, b"abc")))),  # packed floats of 3 bytes
    ],
)
def test_malformed_payloads_raise_the_projects_error(payload):
    with pytest.raises(wire.WireFormatError):
        wire.decode_example(payload)


def _valid_payloads() -> st.SearchStrategy[bytes]:
    frames = np.arange(3 * 4, dtype=np.uint8).reshape(3, 4)
    sequence = wire.encode_sequence_example(
        {"id": [b"v"], "labels": np.array([1, 2], np.int64)}, {"rgb": frames, "audio": frames}
    )
    example = wire.encode_example({"id": [b"v"], "mean_rgb": np.ones(3, np.float32)})
    return st.sampled_from([sequence, example])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(_valid_payloads()))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def _decode_everything(payload: bytes) -> None:
    wire.decode_example(payload)
    wire.decode_context(payload, ["id"])
    context, lists = wire.split_sequence_example(payload)
    for raw in lists.values():
        wire.fixed_bytes_frames(raw)
        wire.decode_feature_list(raw)


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), mutated()))
def test_fuzzed_payloads_decode_or_raise_the_projects_error(payload):
    """Any bytes: decoding finishes (deadline) and raises nothing but `YT8MError`."""
    try:
        _decode_everything(payload)
    except YT8MError:
        pass
