"""`yt8m synth --segments` and `yt8m demo --task segments` (successors.md §1-2)."""

import re

import numpy as np
import pytest

from yt8m.cli import run_command
from yt8m.data.records import parse_frame_record
from yt8m.data.tfrecord import expand_pattern, read_records
from yt8m.demo import DemoError
from yt8m.segments.demo import main as segments_demo
from yt8m.segments.ground_truth import read_rated_pairs
from yt8m.segments.synthetic import whitelisted_classes
from yt8m.segments.whitelist import read_segment_label_ids

FEATURES = [("rgb", 8), ("audio", 4)]


def records(pattern):
    return [
        parse_frame_record(p, FEATURES, max_frames=100, num_classes=12)
        for path in expand_pattern(pattern)
        for p in read_records(path)
    ]


def test_synth_segments_writes_rated_splits_in_the_2019_format(tmp_path, capsys):
    argv = ["--segments", f"--output={tmp_path}", "--train_videos=6", "--validate_videos=40"]
    argv += ["--test_videos=10", "--classes=12", "--min_frames=12", "--max_frames=60"]
    assert run_command("synth", [*argv, "--feature_sizes=8,4", "--shards=2"]) == 0
    assert f"whitelist {tmp_path / 'segment_label_ids.csv'}" in capsys.readouterr().out
    whitelist = read_segment_label_ids(str(tmp_path / "segment_label_ids.csv"), 12)
    assert whitelist.tolist() == whitelisted_classes(12).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    train = records(str(tmp_path / "frame" / "train*.tfrecord"))
    assert len(train) == 6 and all(r.segments is None and len(r.labels) for r in train)
    validate = records(str(tmp_path / "frame" / "validate*.tfrecord"))
    test = records(str(tmp_path / "frame" / "test*.tfrecord"))
    assert len(validate) == 40 and all(len(r.labels) for r in validate)
    assert len(test) == 10 and all(len(r.labels) == 0 for r in test)  # test: no video labels
    counts = []
    for r in validate + test:
        s = r.segments
        counts.append(len(s.labels))
        assert len(set(s.labels.tolist())) == 1 and int(s.labels[0]) in whitelist
        assert set(s.scores.tolist()) <= {0.0, 1.0}
        assert np.all(s.start_times % 5 == 0) and np.all(s.start_times < r.num_frames)
        assert len(set(s.start_times.tolist())) == len(s.start_times)
    assert 4 <= np.mean(counts) <= 5  # about 5 (fewer in videos under 25 frames)
    truth = read_rated_pairs(str(tmp_path / "frame" / "validate*.tfrecord"))
    assert 0.3 < float(np.mean(truth.score)) < 0.7  # ratings 0/1, about half positive


def test_synth_segments_takes_shared_evidence_for_the_training_videos(tmp_path):
    """bench/quality.py's generator option (successors.md §3) applies to the train split."""
    argv = ["--segments", "--train_videos=4", "--validate_videos=2", "--test_videos=2"]
    argv += ["--classes=12", "--min_frames=12", "--max_frames=20", "--feature_sizes=8,4"]
    frames = {}
    for name, extra in (("plain", []), ("shared", ["--shared_evidence"])):
        assert run_command("synth", [*argv, *extra, f"--output={tmp_path / name}"]) == 0
        frames[name] = [r.frames for r in records(str(tmp_path / name / "frame" / "train*"))]
    assert len(frames["shared"]) == 4
    assert any(not np.array_equal(a, b) for a, b in zip(*frames.values(), strict=True))


def test_the_demo_raises_map_by_fine_tuning(tmp_path, capsys):
    """The pretrained model's segment MAP, then the fine-tuned one's, on the same test split:
    fine-tuning on the rated segments must raise it clearly (1.3-1.4x in trial runs)."""
    argv = ["--task", "segments", f"--output={tmp_path}", "--videos=300", "--steps=60"]
    argv += ["--finetune_steps=40", "--finetune_batch_size=64", "--classes=12"]
    argv += ["--recalibrate_batch_norm=5"]
    assert run_command("demo", argv) == 0
    out = capsys.readouterr().out
    found = {
        stage: float(value)
        for stage, value in re.findall(r"^(pretrained|fine-tuned) .*?\s(\d\.\d{4})\s", out, re.M)
    }
    assert set(found) == {"pretrained", "fine-tuned"}
    assert found["fine-tuned"] >= 1.1 * found["pretrained"], out
    assert (tmp_path / "submissions" / "segments-finetuned.csv.gz").exists()


def test_the_demo_names_an_unknown_model(tmp_path):
    with pytest.raises(DemoError, match="no seed model '9'"):
        segments_demo([f"--output={tmp_path}", "--model=9"])
    assert not list(tmp_path.iterdir())
