"""`yt8m synth` on bad input (issue 11 case 5): refuses to mix its shards with old ones, and
says what is wrong with an option instead of a traceback."""

from __future__ import annotations

import pytest

from yt8m.cli import run_command
from yt8m.data.tfrecord import expand_pattern, read_records

SMALL = ["--train_videos=4", "--validate_videos=2", "--test_videos=2", "--classes=5"]
SMALL += ["--min_frames=1", "--max_frames=3", "--feature_sizes=4,2"]


def _records(pattern: str) -> int:
    return sum(1 for path in expand_pattern(pattern) for _ in read_records(path))


def test_a_folder_holding_shards_is_refused_and_left_as_it_was(tmp_path, capsys):
    """Case 5: old shards stayed beside the new ones, and the printed glob took both."""
    out = str(tmp_path / "data")
    assert run_command("synth", ["--output", out, "--shards=4", *SMALL]) == 0
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.tfrecord"))
    capsys.readouterr()
    assert run_command("synth", ["--output", out, "--shards=2", *SMALL]) == 2
    error = capsys.readouterr().err
    assert "already holds shards" in error and "--overwrite" in error
    assert len(error.strip().splitlines()) == 1
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.tfrecord")) == before


def test_overwrite_removes_the_earlier_shards_first(tmp_path, capsys):
    out = tmp_path / "data"
    assert run_command("synth", ["--output", str(out), "--shards=4", *SMALL]) == 0
    assert run_command("synth", ["--output", str(out), "--shards=2", "--overwrite", *SMALL]) == 0
    assert sorted(p.name for p in (out / "frame").iterdir()) == [
        f"{split}000{i}.tfrecord" for split in ("test", "train", "validate") for i in (0, 1)
    ]
    assert _records(str(out / "frame" / "train*.tfrecord")) == 4  # not 4 + 4
    (out / "frame" / "train-mine.tfrecord").write_bytes(b"")  # not synth's: never removed
    capsys.readouterr()
    assert run_command("synth", ["--output", str(out), "--overwrite", *SMALL]) == 2
    assert "synth did not write" in capsys.readouterr().err
    assert (out / "frame" / "train-mine.tfrecord").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max_frames", "20"], "the minimum 60 must lie between 0 and the maximum 20"),
        (["--feature_sizes", "1024"], "--feature_sizes=1024: give two positive sizes"),
        (["--feature_sizes", "a,b"], "--feature_sizes=a,b: give two positive sizes"),
        (["--shards", "0"], "--shards=0"),
        (["--train_videos", "-3"], "at least 0"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, options, message):
    assert run_command("synth", ["--output", str(tmp_path / "d"), *options]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_an_output_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    """Case 5: `synth --output FILE` ended in a traceback."""
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert run_command("synth", ["--output", str(target), *SMALL]) == 2
    assert "is a file: give the directory" in capsys.readouterr().err
    assert target.read_text() == "mine\n"
    assert run_command("synth", ["--output", str(target / "sub"), *SMALL]) == 2
    assert "cannot create its folders" in capsys.readouterr().err


def test_segment_data_is_refused_over_old_shards_and_overwrite_replaces_them(tmp_path, capsys):
    """Case 5 for `synth --segments` (the 2019 rated splits, successors.md §2): the same
    refusal, the same --overwrite, bad options as one-line errors."""
    out = str(tmp_path / "data")
    argv = ["--output", out, "--segments", "--shards=2", *SMALL]
    assert run_command("synth", argv) == 0
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.tfrecord"))
    capsys.readouterr()
    assert run_command("synth", [*argv, "--shards=1"]) == 2
    error = capsys.readouterr().err
    assert "already holds shards" in error and len(error.strip().splitlines()) == 1
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*.tfrecord")) == before
    assert run_command("synth", [*argv, "--shards=1", "--overwrite"]) == 0
    assert len(list((tmp_path / "data" / "frame").glob("train*.tfrecord"))) == 1
    assert run_command("synth", ["--output", str(tmp_path / "d"), "--segments", *SMALL,
                                 "--min_frames=0"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "the minimum 0 must lie between 1 and the maximum 3" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
