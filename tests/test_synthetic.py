"""Synthetic datasets: the real format, skewed labels, evidence the mean cannot see."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from yt8m.data import synthetic
from yt8m.data.records import iter_video_labels, parse_frame_record, parse_video_record
from yt8m.data.tfrecord import expand_pattern, read_records

SIZES = (32, 8)
CLASSES = 8
SEED = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    videos = {"train": 400, "validate": 30, "test": 20}
    patterns = synthetic.write_dataset(
        root,
        videos=videos,
        shards=3,
        classes=CLASSES,
        frames=(20, 40),
        feature_sizes=SIZES,
        seed=SEED,
    )
    return root, patterns


def frame_records(pattern):
    features = [("rgb", SIZES[0]), ("audio", SIZES[1])]
    for path in expand_pattern(pattern):
        for payload in read_records(path):
            yield parse_frame_record(payload, features, num_classes=CLASSES)


def test_layout_labels_and_ids(dataset):
    root, patterns = dataset
    assert sorted(p.name for p in (root / "frame").iterdir())[:3] == [
        "test0000.tfrecord", "test0001.tfrecord", "test0002.tfrecord",
    ]  # fmt: skip
    ids = []
    for level in ("frame", "video"):
        level_ids = []
        for split, count in {"train": 400, "validate": 30, "test": 20}.items():
            videos = list(iter_video_labels(patterns[level][split], CLASSES))
            assert len(videos) == count
            assert all(len(labels) == 0 for _, labels in videos) == (split == "test")
            level_ids += [vid for vid, _ in videos]
        assert len(set(level_ids)) == len(level_ids)  # unique across splits
        ids.append(level_ids)
    assert ids[0] == ids[1]  # frame- and video-level files describe the same videos


def test_labels_are_about_three_per_video_and_skewed(dataset):
    _, patterns = dataset
    labels = [labels for _, labels in iter_video_labels(patterns["frame"]["train"], CLASSES)]
    assert 2.5 < np.mean([len(x) for x in labels]) < 3.5
    assert all(len(set(x.tolist())) == len(x) >= 1 for x in labels)
    counts = Counter(int(c) for x in labels for c in x)
    assert counts[0] == max(counts.values()) and counts[0] > 2 * counts[CLASSES - 1]


def test_frames_in_range_and_video_means_match_frames(dataset):
    _, patterns = dataset
    features = [("mean_rgb", SIZES[0]), ("mean_audio", SIZES[1])]
    videos = [
        parse_video_record(p, features, num_classes=CLASSES)
        for path in expand_pattern(patterns["video"]["validate"])
        for p in read_records(path)
    ]
    for record, video in zip(frame_records(patterns["frame"]["validate"]), videos, strict=True):
        assert 20 <= record.num_frames <= 40 and record.video_id == video.video_id
        # quantization (half a step 4/255/2) and the dequantization bias (4/512) apart
        dequantized = record.frames.astype(np.float64) * 4 / 255 - 2
        np.testing.assert_allclose(dequantized.mean(0), video.features, atol=4 / 255 / 2 + 1e-6)


def test_quantize_is_youtube8m_s_formula():
    x = np.array([-3.0, -2.0, 0.0, 4 / 255 * 0.5 - 2, 1.99, 2.5], np.float32)
    expected = [0, 0, round(2 * 255 / 4), round(0.5), round(3.99 * 255 / 4), 255]
    assert synthetic.quantize(x).tolist() == expected


def effect_size(statistic, positive):
    a, b = statistic[positive], statistic[~positive]
    return (a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)


def test_evidence_lives_in_the_mean_and_where_averaging_cannot_see_it(dataset):
    """design.md: some evidence in the mean, some only in how frames spread."""
    _, patterns = dataset
    generator = synthetic.Generator(CLASSES, SIZES, SEED)  # the same class patterns
    records = list(frame_records(patterns["frame"]["train"]))
    for c in range(3):
        positive = np.array([c in r.labels for r in records])
        mean_pattern, swing = generator.patterns[c, 0], generator.patterns[c, 1]
        frames = [r.frames.astype(np.float64) * 4 / 255 - 2 for r in records]
        mean_along_mean = np.array([f.mean(0) @ mean_pattern for f in frames])
        mean_along_swing = np.array([f.mean(0) @ swing for f in frames])
        spread_along_swing = np.array([((f @ swing) ** 2).mean() for f in frames])
        assert effect_size(mean_along_mean, positive) > 0.5
        assert abs(effect_size(mean_along_swing, positive)) < 0.5
        assert effect_size(spread_along_swing, positive) > 1.5


def test_id_key_and_command_line(tmp_path, capsys):
    code = synthetic.main(
        ["--output", str(tmp_path), "--train_videos", "3", "--validate_videos", "2", "--test_videos", "1",
         "--shards", "1", "--classes", "5", "--id_key", "id", "--min_frames", "1", "--max_frames", "2",
         "--feature_sizes", "4,2"]
    )  # fmt: skip
    assert code == 0
    assert "frame train" in capsys.readouterr().out
    [payload] = list(read_records(str(tmp_path / "frame" / "test0000.tfrecord")))
    assert b"\n\x02id" in payload and b"video_id" not in payload


def test_shared_evidence_puts_every_label_in_the_same_frames():
    """successors.md §3 / bench/quality.py: with shared_evidence a video's labels show
    together in one set of frames (frames summing several classes' patterns)."""
    generator = synthetic.Generator(CLASSES, (512, 64), SEED, shared_evidence=True)
    generator.noise[:] = 0  # frames are then the scene, plus the evidence where it is
    for labels in ([0, 3], [1, 2, 5]):
        x = generator.video(np.array(labels), 30).astype(np.float64)
        rows, counts = np.unique(x, axis=0, return_counts=True)
        evidence = x - rows[counts.argmax()]  # the background rows: the scene alone
        frames = [set(np.flatnonzero(evidence @ generator.patterns[c, 0] > 0.3)) for c in labels]
        assert frames[0] and all(f == frames[0] for f in frames)
        assert len(frames[0]) == int((np.abs(evidence).sum(1) > 0).sum())
