"""atomic_output: all or nothing at the target path."""

import gzip

import pytest

from yt8m.atomic import atomic_output


def test_writes_text_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    with atomic_output(target) as f:
        f.write("VideoId,LabelConfidencePairs\n")
    assert target.read_text() == "VideoId,LabelConfidencePairs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_gzip_when_the_name_says_so(tmp_path):
    target = tmp_path / "out.csv.gz"
    with atomic_output(target) as f:
        f.write("a\n" * 1000)
    assert gzip.decompress(target.read_bytes()) == b"a\n" * 1000


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as f:
        f.write("half a file")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_binary_mode(tmp_path):
    target = tmp_path / "w.bin"
    with atomic_output(target, binary=True) as f:
        f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
