"""TFRecord framing (fidelity.md §1): masked CRC32C, plain and GZIP, corruption, globs."""

from __future__ import annotations

import gzip
import struct

import crc32c
import fsspec
import pytest
from tfrecord.writer import TFRecordWriter as PeerWriter

from yt8m.data.tfrecord import (
    CorruptRecordError,
    ReadStats,
    RecordError,
    TFRecordWriter,
    count_records,
    expand_pattern,
    masked_crc32c,
    read_records,
)
from yt8m.errors import YT8MError

PAYLOADS = [b"", b"a", b"hello world" * 3, bytes(range(256)) * 2]


def write(path, payloads=PAYLOADS, **options):
    with TFRecordWriter(path, **options) as writer:
        for payload in payloads:
            writer.write(payload)
    return path


def record_starts(payloads):
    starts, offset = [], 0
    for payload in payloads:
        starts.append(offset)
        offset += 16 + len(payload)
    return starts, offset


def test_masked_crc_matches_the_formula_of_fidelity_section_1():
    data = b"YouTube-8M"
    crc = crc32c.crc32c(data)
    expected = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32
    assert masked_crc32c(data) == expected
    assert struct.pack("<I", masked_crc32c(data)) == PeerWriter.masked_crc(data)


@pytest.mark.parametrize("name", ["plain.tfrecord", "compressed.tfrecord.gz"])
def test_round_trip(tmp_path, name):
    path = write(tmp_path / name)
    assert list(read_records(str(path))) == PAYLOADS
    assert count_records(str(path)) == len(PAYLOADS)


def test_gzip_is_detected_by_magic_bytes_not_by_name(tmp_path):
    path = write(tmp_path / "no_suffix.tfrecord", compression="GZIP")
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(path.read_bytes())[:8] == struct.pack("<Q", len(PAYLOADS[0]))
    assert list(read_records(str(path))) == PAYLOADS


def test_plain_layout_is_length_crc_payload_crc(tmp_path):
    data = write(tmp_path / "one.tfrecord", [b"xyz"]).read_bytes()
    length = struct.pack("<Q", 3)
    assert data == (
        length
        + struct.pack("<I", masked_crc32c(length))
        + b"xyz"
        + struct.pack("<I", masked_crc32c(b"xyz"))
    )


def test_writer_leaves_no_file_when_the_block_fails(tmp_path):
    path = tmp_path / "broken.tfrecord"
    with pytest.raises(ZeroDivisionError), TFRecordWriter(path) as writer:
        writer.write(b"x")
        raise ZeroDivisionError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["plain.tfrecord", "compressed.tfrecord.gz"])
def test_every_single_byte_corruption_is_reported_or_harmless(tmp_path, name):
    """Each byte of the (uncompressed) stream replaced by 3 other values: the reader raises
    `CorruptRecordError` or returns exactly the original payloads — never something else."""
    payloads = [b"ab", b"", b"0123456789"]
    clean = write(tmp_path / "clean.tfrecord", payloads).read_bytes()
    damaged = tmp_path / name
    reported = 0
    for position in range(len(clean)):
        for delta in (1, 0x80, 0xFF):
            data = bytearray(clean)
            data[position] ^= delta
            damaged.write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else data)
            try:
                assert list(read_records(str(damaged))) == payloads
            except CorruptRecordError as err:
                assert str(damaged) in str(err) and "byte" in str(err)
                reported += 1
    assert reported == 3 * len(clean)  # every byte of a record is covered by a CRC


def test_corrupt_gzip_stream_is_a_record_error(tmp_path):
    compressed = bytearray(write(tmp_path / "c.tfrecord.gz").read_bytes())
    for position in range(10, len(compressed)):
        data = bytearray(compressed)
        data[position] ^= 0x55
        (tmp_path / "d.tfrecord").write_bytes(data)
        try:
            assert list(read_records(str(tmp_path / "d.tfrecord"))) == PAYLOADS
        except RecordError as err:
            assert "d.tfrecord" in str(err)


def test_truncation_inside_a_record_names_file_and_offset(tmp_path):
    payloads = [b"first", b"second record"]
    clean = write(tmp_path / "clean.tfrecord", payloads).read_bytes()
    starts, _ = record_starts(payloads)
    for size in range(1, len(clean)):
        (tmp_path / "cut.tfrecord").write_bytes(clean[:size])
        if size in starts:  # a cut between records is a valid, shorter file
            assert (
                list(read_records(str(tmp_path / "cut.tfrecord"))) == payloads[: starts.index(size)]
            )
            continue
        with pytest.raises(CorruptRecordError, match=r"cut\.tfrecord: truncated .* byte (0|21)"):
            list(read_records(str(tmp_path / "cut.tfrecord")))
        with pytest.raises(CorruptRecordError):
            count_records(str(tmp_path / "cut.tfrecord"))


def test_skip_corrupt_drops_a_bad_payload_and_counts_it(tmp_path, capsys):
    payloads = [b"one", b"two", b"three"]
    data = bytearray(write(tmp_path / "f.tfrecord", payloads).read_bytes())
    starts, _ = record_starts(payloads)
    data[starts[1] + 12] ^= 1  # first payload byte of record 1
    (tmp_path / "f.tfrecord").write_bytes(data)
    with pytest.raises(CorruptRecordError, match=rf"bad payload CRC .* byte {starts[1]}"):
        list(read_records(str(tmp_path / "f.tfrecord")))
    stats = ReadStats()
    assert list(read_records(str(tmp_path / "f.tfrecord"), True, stats)) == [b"one", b"three"]
    assert stats.skipped_records == {str(tmp_path / "f.tfrecord"): 1}
    stats.report()
    assert "f.tfrecord: 1 corrupt record(s) skipped" in capsys.readouterr().err


def test_skip_corrupt_after_a_bad_length_skips_the_rest_of_the_file(tmp_path, capsys):
    payloads = [b"one", b"two", b"three"]
    data = bytearray(write(tmp_path / "f.tfrecord", payloads).read_bytes())
    starts, total = record_starts(payloads)
    data[starts[1]] ^= 1  # the length of record 1: its CRC no longer matches
    (tmp_path / "f.tfrecord").write_bytes(data)
    assert list(read_records(str(tmp_path / "f.tfrecord"), skip_corrupt=True)) == [b"one"]
    err = capsys.readouterr().err  # no stats given: reported when the file is done
    assert (
        f"f.tfrecord: the rest of the file from byte {starts[1]} ({total - starts[1]} bytes)" in err
    )


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_damage_after_many_records_comes_after_every_record_before_it(tmp_path, compression):
    """Payload CRCs of plain files are computed ahead on a helper thread, in windows of
    records: every record before a damaged one is still handed out first, in order."""
    payloads = [f"record {i}".encode() * (i % 7) for i in range(70)]
    plain = bytearray(write(tmp_path / "f.tfrecord", payloads).read_bytes())
    starts, _ = record_starts(payloads)
    plain[starts[40] + 13] ^= 1  # a payload byte of record 40 (bad payload CRC)
    plain = plain[: starts[61] + 5]  # record 61 truncated
    path = tmp_path / ("d.tfrecord.gz" if compression else "d.tfrecord")
    path.write_bytes(gzip.compress(plain) if compression else plain)
    reader = read_records(str(path))
    assert [next(reader) for _ in range(40)] == payloads[:40]
    with pytest.raises(CorruptRecordError, match=rf"bad payload CRC .* byte {starts[40]}"):
        next(reader)
    stats = ReadStats()
    kept = list(read_records(str(path), skip_corrupt=True, stats=stats))
    assert kept == payloads[:40] + payloads[41:61]
    assert stats.skipped_records == {str(path): 1}
    assert stats.skipped_tails[str(path)][0] == starts[61]


def test_missing_file_is_a_record_error(tmp_path):
    with pytest.raises(RecordError, match="absent.tfrecord"):
        list(read_records(str(tmp_path / "absent.tfrecord")))


def test_expand_pattern_sorts_deduplicates_and_takes_comma_lists(tmp_path):
    for name in ["b1.tfrecord", "a2.tfrecord", "a1.tfrecord", "other.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.tfrecord").mkdir()
    found = expand_pattern(f"{tmp_path}/b*.tfrecord, {tmp_path}/a*.tfrecord,{tmp_path}/a1.tfrecord")
    assert found == [str(tmp_path / n) for n in ["a1.tfrecord", "a2.tfrecord", "b1.tfrecord"]]


def test_expand_pattern_without_match_names_the_pattern(tmp_path):
    with pytest.raises(YT8MError, match="no files match the data pattern .*nothing"):
        expand_pattern(f"{tmp_path}/nothing*.tfrecord")


def test_remote_paths_go_through_fsspec(tmp_path):
    local = write(tmp_path / "f.tfrecord")
    with fsspec.open("memory://bucket/train0.tfrecord", "wb") as out:
        out.write(local.read_bytes())
    [path] = expand_pattern("memory://bucket/train*.tfrecord")
    assert path.startswith("memory://") and path.endswith("bucket/train0.tfrecord")
    assert list(read_records(path)) == PAYLOADS


def test_files_written_by_the_tfrecord_package_are_read(tmp_path):
    peer = PeerWriter(str(tmp_path / "peer.tfrecord"))
    peer.write({"x": (b"abc", "byte")})
    peer.close()
    [payload] = read_records(str(tmp_path / "peer.tfrecord"))
    assert b"abc" in payload
