"""The compiled fast path for frame-level records (fidelity.md §1, §2.2-3; issue 2).

It must take the records that TensorFlow-style writers produce (ours and the PyPI
`tfrecord` package, an independent encoder), and for every record it takes give exactly
what the general decoder gives; every other record must be left to the general decoder.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfrecord.writer import TFRecordWriter as PeerWriter

from yt8m.data import wire
from yt8m.data.records import (
    Segments,
    encode_frame_record,
    parse_frame_record,
    parse_frame_record_general,
)
from yt8m.data.regular_records import read_regular_frame_record
from yt8m.data.tfrecord import RecordError, read_records

FEATURES = (("rgb", 8), ("audio", 3))
NUM_CLASSES = 10
RNG = np.random.default_rng(0)


def fast(payload: bytes, max_frames: int = 300, features=FEATURES):
    out = np.zeros((max_frames, sum(s for _, s in features)), np.uint8)
    taken = read_regular_frame_record(
        np.frombuffer(payload, np.uint8), features, max_frames, NUM_CLASSES, out
    )
    return taken, out


def frames(n: int) -> dict[str, np.ndarray]:
    return {name: RNG.integers(0, 256, (n, size), dtype=np.uint8) for name, size in FEATURES}


def test_records_of_our_writer_and_of_the_tfrecord_package_take_the_fast_path(tmp_path):
    parts = frames(4)
    ours = encode_frame_record("abc", [7, 2, 7], parts)
    writer = PeerWriter(str(tmp_path / "peer.tfrecord"))
    writer.write(
        {"video_id": (b"abc", "byte"), "labels": ([7, 2, 7], "int")},
        {name: ([row.tobytes() for row in value], "byte") for name, value in parts.items()},
    )
    writer.close()
    (peer,) = read_records(str(tmp_path / "peer.tfrecord"))
    for payload in (ours, peer):
        taken, out = fast(payload, max_frames=3)
        assert taken is not None
        assert payload[taken.id_start : taken.id_end] == b"abc"
        assert taken.labels.tolist() == [7, 2, 7] and taken.num_frames == 3
        np.testing.assert_array_equal(out[:3, :8], parts["rgb"][:3])
        np.testing.assert_array_equal(out[:3, 8:], parts["audio"][:3])
        assert not out[3:].any()


def test_test_split_without_labels_and_videos_without_frames_are_taken():
    taken, _ = fast(encode_frame_record("t", None, frames(2), id_key="id"))
    assert taken is not None and taken.labels.size == 0
    taken, _ = fast(encode_frame_record("z", [1], frames(0)))
    assert taken is not None and taken.num_frames == 0


def test_segment_features_are_reported_and_read_by_the_caller():
    segments = Segments(np.array([3]), np.array([5]), np.array([1.0], np.float32))
    payload = encode_frame_record("s", [3], frames(2), segments=segments)
    taken, _ = fast(payload)
    assert taken is not None and taken.has_segments
    record = parse_frame_record(payload, FEATURES, num_classes=NUM_CLASSES)
    assert record.segments is not None and record.segments.start_times.tolist() == [5]


# ---- any encoding: the fast path either declines or agrees with the general decoder ----


def field(number: int, content: bytes, minimal: bool = True) -> bytes:
    """A length-delimited field; with minimal=False its length takes one byte more."""
    length = wire._encode_varint(len(content))
    if not minimal:
        length = bytes([*length[:-1], length[-1] | 0x80, 0])
    return wire._encode_varint(number << 3 | 2) + length + content


def int64_feature(values: list[int], packed: bool) -> bytes:
    if packed:
        return field(3, field(1, b"".join(wire._encode_varint(v) for v in values)))
    return field(3, b"".join(b"\x08" + wire._encode_varint(v) for v in values))


@st.composite
def sequence_examples(draw: st.DrawFn) -> bytes:
    """SequenceExamples in many valid (and some invalid) encodings of one video."""
    n = draw(st.integers(0, 4))
    context = []
    # mostly regular, each irregularity now and then
    keys = draw(st.sampled_from([["video_id"]] * 4 + [["id"]] * 4 + [["video_id", "id"], []]))
    for key in keys:
        context.append((key, field(1, field(1, draw(st.sampled_from([b"v1"] * 4 + [b"\xff"]))))))
    labels = draw(st.lists(st.sampled_from([0, 3, 9] * 4 + [10, -1]), max_size=4))
    if draw(st.booleans()):
        context.append(("labels", int64_feature(labels, draw(st.booleans()))))
    if draw(st.booleans()):
        context.append(("extra", field(2, field(1, b"\x00\x00\x80\x3f"))))
    if draw(st.booleans()):
        count = draw(st.integers(0, 2))
        context.append(("segment_labels", int64_feature([1] * count, True)))
        context.append(("segment_start_times", int64_feature([5] * count, True)))
        context.append(("segment_scores", field(2, field(1, b"\x00\x00\x80\x3f" * count))))
    lists = []
    for name, size in (*FEATURES, ("other", 2)):
        if draw(st.integers(0, 9)) == 0 if name != "other" else draw(st.booleans()):
            continue  # a missing feature list, or none besides the wanted ones
        count = n + (name == "audio" and draw(st.integers(0, 9)) == 0)
        odd = draw(st.integers(0, count)) if draw(st.integers(0, 4)) == 0 else -1
        how = draw(st.sampled_from(["size", "varint", "two values"]))
        encoded = []
        for i in range(count):
            value = RNG.integers(0, 256, size + (i == odd and how == "size"), np.uint8).tobytes()
            values = field(1, value, minimal=not (i == odd and how == "varint"))
            values += field(1, value) if i == odd and how == "two values" else b""
            encoded.append(field(1, field(1, values)))
        lists.append((name, b"".join(encoded)))
    for entries in (context, lists):
        order = draw(st.permutations(range(len(entries))))
        entries[:] = [entries[i] for i in order]
        if entries and draw(st.integers(0, 9)) == 0:
            entries.append(entries[0])  # a repeated key: the last one wins
    swapped = draw(st.integers(0, 19)) == 0  # an entry with its value before its key

    def entry(key: str, value: bytes) -> bytes:
        parts = [field(1, key.encode()), field(2, value)]
        return field(1, b"".join(parts[::-1] if swapped else parts))

    top = [
        field(1, b"".join(entry(k, v) for k, v in context)),
        field(2, b"".join(entry(k, v) for k, v in lists)),
    ]
    if draw(st.booleans()):
        top.reverse()
    if draw(st.integers(0, 9)) == 0:
        top.append(field(7, b"unknown"))
    return b"".join(top)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_examples(), st.integers(1, 5))
def test_fast_path_declines_or_equals_the_general_decoder(payload, max_frames):
    taken, out = fast(payload, max_frames)
    options = {"max_frames": max_frames, "num_classes": NUM_CLASSES}
    try:
        general = parse_frame_record_general(payload, FEATURES, **options)
    except RecordError as err:
        general = err
    if taken is not None:
        assert not isinstance(general, RecordError) or "segment" in str(general)
    if taken is not None and not isinstance(general, RecordError):
        video_id = payload[taken.id_start : taken.id_end].decode("utf-8", "backslashreplace")
        assert video_id == general.video_id
        assert taken.labels.tolist() == general.labels.tolist()
        assert taken.num_frames == general.num_frames
        np.testing.assert_array_equal(out[: taken.num_frames], general.frames)
    try:
        record = parse_frame_record(payload, FEATURES, **options)
    except RecordError as err:
        assert isinstance(general, RecordError) and str(err) == str(general)
    else:
        assert not isinstance(general, RecordError)
        assert record.video_id == general.video_id
        assert record.labels.tolist() == general.labels.tolist()
        np.testing.assert_array_equal(record.frames, general.frames)
        assert (record.segments is None) == (general.segments is None)
