"""One record <-> one video (fidelity.md §1, §2.2-3), cross-checked with the PyPI `tfrecord`
package (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfrecord.reader import tfrecord_loader
from tfrecord.writer import TFRecordWriter as PeerWriter

from yt8m.data import wire
from yt8m.data.records import (
    Segments,
    encode_frame_record,
    encode_video_record,
    iter_video_labels,
    parse_frame_record,
    parse_video_record,
)
from yt8m.data.tfrecord import RecordError, TFRecordWriter, read_records
from yt8m.errors import YT8MError

FEATURES = [("rgb", 8), ("audio", 3)]
VIDEO_FEATURES = [("mean_rgb", 8), ("mean_audio", 3)]
RNG = np.random.default_rng(0)


def frames(n: int) -> dict[str, np.ndarray]:
    return {name: RNG.integers(0, 256, (n, size), dtype=np.uint8) for name, size in FEATURES}


@pytest.mark.parametrize("id_key", ["video_id", "id"])
def test_frame_record_round_trip_concatenates_in_flag_order(id_key):
    parts = frames(5)
    payload = encode_frame_record("abc", [2, 0, 9], parts, id_key=id_key)
    record = parse_frame_record(payload, FEATURES, num_classes=10)
    assert record.video_id == "abc" and record.num_frames == 5
    np.testing.assert_array_equal(record.labels, [2, 0, 9])
    np.testing.assert_array_equal(record.frames, np.concatenate([parts["rgb"], parts["audio"]], 1))
    swapped = parse_frame_record(payload, FEATURES[::-1], num_classes=10)  # --feature_names order
    np.testing.assert_array_equal(swapped.frames[:, :3], parts["audio"])


def test_frames_beyond_max_frames_are_dropped_and_out_is_filled():
    parts = frames(7)
    out = np.full((4, 11), 77, np.uint8)
    record = parse_frame_record(
        encode_frame_record("v", [1], parts), FEATURES, max_frames=4, out=out
    )
    assert record.num_frames == 4 and record.frames.shape == (4, 11)
    np.testing.assert_array_equal(out[:, :8], parts["rgb"][:4])


def test_irregular_layout_takes_the_general_path_with_the_same_result():
    parts = frames(3)
    lists = {name: [[row.tobytes()] for row in value] for name, value in parts.items()}
    lists["rgb"][1] = [parts["rgb"][1].tobytes()]
    payload = wire.encode_sequence_example({"id": [b"v"], "extra": [b""]}, lists)
    raw = payload + wire._length_field(7, b"unknown top-level field")
    record = parse_frame_record(raw, FEATURES)
    np.testing.assert_array_equal(record.frames[:, 8:], parts["audio"])


def test_video_record_round_trip_and_test_split_without_labels():
    values = {
        "mean_rgb": RNG.random(8, dtype=np.float32),
        "mean_audio": RNG.random(3, dtype=np.float32),
    }
    record = parse_video_record(encode_video_record("w", None, values, id_key="id"), VIDEO_FEATURES)
    assert record.video_id == "w" and record.labels.dtype == np.int64 and record.labels.size == 0
    assert record.features.dtype == np.float32
    np.testing.assert_array_equal(record.features, np.concatenate(list(values.values())))


def test_segment_fields_of_2019_are_read():
    segments = Segments(np.array([3, 3]), np.array([5, 40]), np.array([1.0, 0.0], np.float32))
    payload = encode_frame_record("s", [3], frames(2), id_key="id", segments=segments)
    record = parse_frame_record(payload, FEATURES, num_classes=1000)
    np.testing.assert_array_equal(record.segments.start_times, [5, 40])
    np.testing.assert_array_equal(record.segments.scores, [1.0, 0.0])
    assert parse_frame_record(encode_frame_record("s", [3], frames(2)), FEATURES).segments is None


def test_missing_id_lists_the_keys_present():
    payload = wire.encode_sequence_example({"vid": [b"x"], "labels": np.array([1])}, frames(1))
    with pytest.raises(
        RecordError, match=r"f\.tfrecord, record 3: .*'video_id' nor 'id' .*labels, vid"
    ):
        parse_frame_record(payload, FEATURES, source="f.tfrecord, record 3")


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            {"rgb": frames(3)["rgb"], "audio": frames(2)["audio"]},
            "'audio' has 2 frames but 'rgb' has 3",
        ),
        (
            {"rgb": np.zeros((2, 7), np.uint8), "audio": frames(2)["audio"]},
            "frame 0 of 'rgb' has 7 bytes, expected 8",
        ),
        ({"audio": frames(2)["audio"]}, "no feature list 'rgb'; it has: audio"),
    ],
    ids=["frame counts", "frame size", "missing feature"],
)
def test_bad_frame_records_name_file_and_video(parts, message):
    payload = encode_frame_record("bad1", [1], parts)
    with pytest.raises(RecordError, match=rf"^f\.tfrecord, record 0, video 'bad1': {message}"):
        parse_frame_record(payload, FEATURES, source="f.tfrecord, record 0")


def test_label_outside_the_vocabulary_is_an_error():
    payload = encode_frame_record("big", [4716], frames(1))
    with pytest.raises(RecordError, match=r"video 'big': label 4716 .*--num_classes=4716"):
        parse_frame_record(payload, FEATURES)
    with pytest.raises(RecordError, match="label -1"):
        parse_video_record(
            encode_video_record("neg", [-1], {"mean_rgb": np.zeros(8), "mean_audio": np.zeros(3)}),
            VIDEO_FEATURES,
        )


def test_video_level_data_read_as_frame_level_and_back_gives_a_hint():
    video = encode_video_record("v", [1], {"mean_rgb": np.zeros(8), "mean_audio": np.zeros(3)})
    with pytest.raises(RecordError, match="video-level data"):
        parse_frame_record(video, FEATURES)
    with pytest.raises(RecordError, match="no feature 'mean_rgb'.*--frame_features"):
        parse_video_record(encode_frame_record("v", [1], frames(2)), VIDEO_FEATURES)
    with pytest.raises(RecordError, match="'mean_rgb' has 2 float value"):
        parse_video_record(
            encode_video_record("v", [], {"mean_rgb": np.zeros(2), "mean_audio": np.zeros(3)}),
            VIDEO_FEATURES,
        )


def test_iter_video_labels_reads_ids_and_labels_of_both_levels(tmp_path):
    with TFRecordWriter(tmp_path / "a.tfrecord") as writer:
        writer.write(encode_frame_record("f1", [5, 1], frames(4)))
        writer.write(encode_video_record("v1", [], {"mean_rgb": np.zeros(8)}, id_key="id"))
    got = [(vid, labels.tolist()) for vid, labels in iter_video_labels(str(tmp_path / "*"), 10)]
    assert got == [("f1", [5, 1]), ("v1", [])]
    with pytest.raises(RecordError, match="a.tfrecord, record 0, video 'f1': label 5"):
        list(iter_video_labels(str(tmp_path / "*"), 5))


def test_the_tfrecord_package_decodes_our_files_identically(tmp_path):
    videos = [
        (f"id{i}", sorted(RNG.choice(50, 3, replace=False).tolist()), frames(i + 1))
        for i in range(4)
    ]
    with TFRecordWriter(tmp_path / "ours.tfrecord") as writer:
        for vid, labels, parts in videos:
            writer.write(encode_frame_record(vid, labels, parts))
    peer = tfrecord_loader(
        str(tmp_path / "ours.tfrecord"),
        None,
        ["video_id", "labels"],
        sequence_description=["rgb", "audio"],
    )
    for (vid, labels, parts), (context, lists) in zip(videos, peer, strict=True):
        assert bytes(context["video_id"]).decode() == vid
        assert context["labels"].tolist() == labels
        for name in ("rgb", "audio"):
            assert [np.asarray(f).tobytes() for f in lists[name]] == [
                r.tobytes() for r in parts[name]
            ]


def test_files_written_by_the_tfrecord_package_decode_here(tmp_path):
    parts = frames(3)
    writer = PeerWriter(str(tmp_path / "peer.tfrecord"))
    writer.write(
        {"id": (b"peer", "byte"), "labels": ([4, 2], "int")},
        {name: ([row.tobytes() for row in value], "byte") for name, value in parts.items()},
    )
    writer.write(
        {
            "id": (b"pv", "byte"),
            "labels": ([7], "int"),
            "mean_rgb": (np.arange(8.0), "float"),
            "mean_audio": ([0.5] * 3, "float"),
        }
    )
    writer.close()
    sequence, example = read_records(str(tmp_path / "peer.tfrecord"))
    record = parse_frame_record(sequence, FEATURES)
    assert record.video_id == "peer" and record.labels.tolist() == [4, 2]
    np.testing.assert_array_equal(record.frames[:, 8:], parts["audio"])
    video = parse_video_record(example, VIDEO_FEATURES)
    np.testing.assert_array_equal(video.features, [*range(8), 0.5, 0.5, 0.5])


@st.composite
def damaged_records(draw: st.DrawFn) -> bytes:
    payload = bytearray(
        draw(st.sampled_from([
            encode_frame_record("v", [1, 2], frames(3)),
            encode_video_record("w", [3], {"mean_rgb": np.zeros(8), "mean_audio": np.ones(3)}),
        ]))
    )  # fmt: skip
    for _ in range(draw(st.integers(1, 3))):
        payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    return bytes(payload[: draw(st.integers(0, len(payload)))])


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_records())
def test_fuzzed_records_parse_or_raise_the_projects_error(payload):
    for parse, features in ((parse_frame_record, FEATURES), (parse_video_record, VIDEO_FEATURES)):
        try:
            parse(payload, features, num_classes=10)
        except YT8MError:
            pass
