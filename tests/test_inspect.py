"""`yt8m inspect`: what the reader sees, level detected or given."""

from __future__ import annotations

import pytest

from yt8m.cli import main as cli_main
from yt8m.data.inspect import main
from yt8m.data.synthetic import write_dataset


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("inspect"), videos={"train": 7, "test": 2}, shards=2,
        classes=6, frames=(2, 5), feature_sizes=(4, 2), id_key="id", seed=0,
    )  # fmt: skip


def test_frame_level_summary(patterns, capsys):
    assert main([patterns["frame"]["train"], "--feature_sizes=4,2", "--num_classes=6"]) == 0
    out = capsys.readouterr().out
    assert "files: 2" in out
    assert "records: 7 videos, frame-level (SequenceExample); id key: id" in out
    assert "features: rgb 4 + audio 2 -> uint8 frames [num_frames, 6]" in out
    assert "frames per video (at most 300 kept): " in out and "min 2" not in out.replace(
        "min 2,", ""
    )


def test_video_level_summary_with_limit(patterns, capsys):
    assert main([patterns["video"]["test"], "--feature_sizes=4,2", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "records: 1 videos, video-level (Example)" in out
    assert "features: mean_rgb 4 + mean_audio 2 -> float32 [6]" in out


def test_errors_are_one_line_with_status_2(patterns, capsys):
    assert (
        cli_main(["inspect", patterns["video"]["test"], "--frame_features", "--feature_sizes=4,2"])
        == 2
    )
    err = capsys.readouterr().err
    assert "no feature list 'rgb'" in err and err.count("\n") == 1
    assert cli_main(["inspect", "/nonexistent/x*"]) == 2
    assert "no files match the data pattern '/nonexistent/x*'" in capsys.readouterr().err
