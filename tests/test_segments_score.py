"""Segment submissions: written, read back and scored; every bad input (successors.md §2)."""

import gzip
import logging

import numpy as np
import pytest

from tests.segment_data import rated, write_records
from yt8m.cli import run_command
from yt8m.data.tfrecord import RecordError
from yt8m.segments.errors import SegmentError
from yt8m.segments.ground_truth import read_rated_pairs
from yt8m.segments.score import score_submission
from yt8m.segments.selection import TopKPerClass
from yt8m.segments.submission import HEADER, write_segment_submission
from yt8m.segments.whitelist import read_segment_label_ids, write_segment_label_ids

CLASSES = 8
SLOTS = 4  # segments per video: up to 20 frames


@pytest.fixture(scope="module")
def truth_files(tmp_path_factory):
    """12 videos of 20 frames, 3 rated segments each for 2 classes (one video twice)."""
    root = tmp_path_factory.mktemp("truth")
    rng = np.random.default_rng(5)
    videos = []
    for v in range(12):
        labels = [v % CLASSES, v % CLASSES, (v + 3) % CLASSES]
        starts = sorted(rng.choice([0, 5, 10, 15], size=3, replace=False).tolist())
        videos.append((f"vid{v}", 20, rated(labels, starts, rng.integers(0, 2, 3).astype(float))))
    write_records(root / "validate0.tfrecord", videos[:7])
    write_records(root / "validate1.tfrecord", [*videos[7:], videos[2]])
    return str(root / "validate*.tfrecord"), videos


def brute_force_map(scores, videos, k):
    """§2 from the definitions, on the test's own data structures."""
    truth = {}
    for vid, _, seg in videos:
        for label, start, score in zip(seg.labels, seg.start_times, seg.scores, strict=True):
            truth[(f"{vid}:{start}", int(label))] = float(score)
    names = [f"{vid}:{5 * s}" for vid, _, _ in videos for s in range(SLOTS)]
    aps = []
    for c in range(CLASSES):
        positives = sum(1 for (_, label), v in truth.items() if label == c and v > 0)
        if not positives:
            continue
        order = sorted(range(len(names)), key=lambda i: (-scores[i, c], i))[:k]
        kept = [truth[(names[i], c)] for i in order if (names[i], c) in truth]
        hits, total = 0, 0.0
        for rank, value in enumerate(kept, start=1):
            if value > 0:
                hits += 1
                total += hits / rank
        aps.append(total / positives)
    return float(np.mean(aps))


def write_scored(path, scores, videos, k, classes=None):
    """A submission of the best k segments per class of `scores` [segments, CLASSES]."""
    classes = np.arange(CLASSES) if classes is None else classes
    top = TopKPerClass(len(classes), k)
    top.add(scores[:, classes], np.arange(len(scores), dtype=np.int64))
    ids = [vid for vid, _, _ in videos]
    write_segment_submission(path, classes, top.result(), ids, SLOTS, 5)


@pytest.mark.parametrize("k,suffix", [(48, ".csv"), (7, ".csv.gz"), (1, ".csv")])
def test_a_written_submission_scores_as_the_definition_says(truth_files, tmp_path, k, suffix):
    pattern, videos = truth_files
    scores = np.random.default_rng(k).random((12 * SLOTS, CLASSES), dtype=np.float32)
    scores[::5] = 0.5  # ties: the earlier segment first
    path = tmp_path / f"sub{suffix}"
    write_scored(path, scores, videos, k)
    result = score_submission(str(path), read_rated_pairs(pattern), top_n=k, num_classes=CLASSES)
    assert result.result.map == pytest.approx(brute_force_map(scores, videos, k), abs=1e-12)
    assert result.entries == CLASSES * min(k, 12 * SLOTS)


def test_the_file_format_and_the_counts(truth_files, tmp_path):
    pattern, videos = truth_files
    scores = np.zeros((12 * SLOTS, CLASSES), np.float32)
    scores[12:16, 3] = [0.9, 1.0, 0.8, 0.7]  # the segments of vid3 (two rated for class 3)
    path = tmp_path / "sub.csv"
    write_scored(path, scores, videos, 3, classes=np.array([3, 5]))
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "3,vid3:5 vid3:0 vid3:10"
    assert lines[2] == "5,vid0:0 vid0:5 vid0:10"
    truth = read_rated_pairs(pattern)
    assert len(truth.video_ids) == 12  # the video listed twice counts once
    assert len(truth.label) == 36
    result = score_submission(str(path), truth, top_n=3, num_classes=CLASSES).result
    rated_pairs = {
        (f"{vid}:{start}", int(label))
        for vid, _, seg in videos
        for label, start in zip(seg.labels, seg.start_times, strict=True)
    }
    submitted = [
        (entry, int(label))
        for line in lines[1:]
        for label, entries in [line.split(",")]
        for entry in entries.split()
    ]
    found = sum(pair in rated_pairs for pair in submitted)
    assert found > 0
    assert result.rated_pairs == found


def test_the_command_prints_map_and_the_rated_pairs_found(truth_files, tmp_path, capsys):
    pattern, videos = truth_files
    scores = np.random.default_rng(1).random((12 * SLOTS, CLASSES), dtype=np.float32)
    path = tmp_path / "sub.csv"
    write_scored(path, scores, videos, 10)
    assert (
        run_command(
            "score-segments",
            [
                f"--submission_file={path}",
                f"--eval_data_pattern={pattern}",
                "--top_n=10",
                f"--num_classes={CLASSES}",
            ],
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"MAP@10 = {brute_force_map(scores, videos, 10):.6f}" in out
    assert "rated pairs found" in out


def write_text(path, *lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


BAD_LINES = [
    (("Class,Predictions", "3,vid0:0"), "line 1: the header must be 'Class,Segments'"),
    ((HEADER, "3 vid0:0"), "line 2: no comma"),
    ((HEADER, "three,vid0:0"), "line 2: the class 'three' is not an integer"),
    ((HEADER, "3,vid0:0", "9,vid0:0"), r"line 3: class 9 is unknown \(outside 0..7\)"),
    ((HEADER, "3,vid0:0", "", "3,vid1:0"), "line 4: class 3 again \\(first on line 2\\)"),
    ((HEADER, "3,vid0:0 vid0"), "line 2: entry 'vid0' is not vid:start"),
    ((HEADER, "3,vid0:0 :5"), "line 2: entry ':5' is not vid:start"),
    ((HEADER, "3,vid0:0 vid0:"), "line 2: entry 'vid0:' is not vid:start"),
    ((HEADER, "3,vid0:0 vid0:1e3"), "line 2: entry 'vid0:1e3' is not vid:start"),
    ((HEADER, "3,vid0:5 vid1:0 vid0:5"), "line 2: entry 'vid0:5' appears twice in the line"),
]


@pytest.mark.parametrize("lines,message", BAD_LINES)
def test_bad_submissions_are_errors_naming_the_line(truth_files, tmp_path, lines, message):
    pattern, _ = truth_files
    path = write_text(tmp_path / "bad.csv", *lines)
    with pytest.raises(SegmentError, match=message):
        score_submission(path, read_rated_pairs(pattern), num_classes=CLASSES)


def test_a_class_outside_the_whitelist_is_an_error(truth_files, tmp_path):
    pattern, _ = truth_files
    whitelist = tmp_path / "ids.csv"
    write_segment_label_ids(whitelist, np.array([3, 4]))
    path = write_text(tmp_path / "bad.csv", HEADER, "3,vid0:0", "5,vid0:0")
    with pytest.raises(SegmentError, match=r"line 3: class 5 is unknown \(not in the whitelist\)"):
        score_submission(
            path,
            read_rated_pairs(pattern),
            classes=read_segment_label_ids(str(whitelist), CLASSES),
            num_classes=CLASSES,
        )


def test_what_the_kaggle_scorer_accepts_is_counted_warnings(truth_files, tmp_path, caplog):
    pattern, videos = truth_files
    truth = read_rated_pairs(pattern)
    # class 3 only: 5 entries for --top_n=3, one off the grid, one with a leading zero
    path = write_text(tmp_path / "w.csv", HEADER, "3,vid0:0 vid0:3 vid0:05 vid3:0\tvid3:5  vid3:10")
    with caplog.at_level(logging.WARNING):
        score = score_submission(path, truth, top_n=3, num_classes=CLASSES)
    assert score.warnings["warning_entries_past_top_n"] == 3
    assert score.warnings["warning_entries_off_the_segment_grid"] == 2
    with_positives = int(np.count_nonzero(truth.positives(CLASSES)))
    assert score.warnings["warning_classes_with_positives_missing"] == with_positives - 1
    assert "3 entries past --top_n=3" in caplog.text
    assert score.entries == 6


def test_a_submission_that_finds_no_class_with_positives_is_an_error(truth_files, tmp_path):
    pattern, _ = truth_files
    truth = read_rated_pairs(pattern)
    empty = (
        int(np.flatnonzero(truth.positives(CLASSES) == 0)[0])
        if (truth.positives(CLASSES) == 0).any()
        else None
    )
    lines = [HEADER] if empty is None else [HEADER, f"{empty},vid0:0"]
    with pytest.raises(SegmentError, match="no submitted class has a rated positive"):
        score_submission(write_text(tmp_path / "none.csv", *lines), truth, num_classes=CLASSES)


def test_missing_and_unreadable_files_are_errors(truth_files, tmp_path):
    pattern, _ = truth_files
    truth = read_rated_pairs(pattern)
    with pytest.raises(SegmentError, match="no such file"):
        score_submission(str(tmp_path / "nope.csv"), truth)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(f"{HEADER}\n3,vid0:0\n".encode())[:-12])
    with pytest.raises(SegmentError, match="cannot be read"):
        score_submission(str(broken), truth, num_classes=CLASSES)


def test_rated_records_with_fields_of_different_lengths_are_errors_naming_the_record(tmp_path):
    """The three segment fields must have one value per rated segment."""
    from yt8m.data.records import Segments

    bad = Segments(
        np.array([1, 2], np.int64), np.array([0], np.int64), np.array([1.0, 0.0], np.float32)
    )
    pattern = write_records(
        tmp_path / "validate0.tfrecord", [("ok", 10, rated([1], [0], [1.0])), ("bad", 10, bad)]
    )
    with pytest.raises(
        RecordError,
        match=r"record 1, video 'bad': the segment fields differ in length: segment_labels has 2 values, segment_start_times 1, segment_scores 2",
    ):
        read_rated_pairs(pattern)


def test_conflicting_ratings_and_no_ratings_are_errors(tmp_path):
    write_records(tmp_path / "v0.tfrecord", [("a", 10, rated([1], [0], [1.0]))])
    write_records(tmp_path / "v1.tfrecord", [("a", 10, rated([1], [0], [0.0]))])
    with pytest.raises(SegmentError, match="video 'a', segment 0 s, class 1 is rated twice"):
        read_rated_pairs(str(tmp_path / "v*.tfrecord"))
    plain = write_records(tmp_path / "plain.tfrecord", [("p", 10, None)])
    with pytest.raises(SegmentError, match="no rated segment in .*plain"):
        read_rated_pairs(plain)


def test_repeats_are_found_anywhere_in_a_long_line(truth_files, tmp_path):
    """Thousands of entries (the repeat check partitions their hashes), one repeated."""
    pattern, _ = truth_files
    truth = read_rated_pairs(pattern)
    entries = [f"x{i}:{5 * (i % 60)}" for i in range(6000)]
    path = write_text(tmp_path / "long.csv", HEADER, "3," + " ".join(entries))
    assert score_submission(path, truth, num_classes=CLASSES).entries == 6000
    for position in (1, 2999, 5999):
        repeated = [*entries[:position], entries[position // 2], *entries[position:]]
        path = write_text(tmp_path / "rep.csv", HEADER, "3," + " ".join(repeated))
        with pytest.raises(SegmentError, match=f"entry '{entries[position // 2]}' appears twice"):
            score_submission(path, truth, num_classes=CLASSES)


def test_the_segment_grid_follows_the_segment_size(truth_files, tmp_path):
    """A size that does not divide 10 (3): every digit of the start counts."""
    pattern, _ = truth_files
    path = write_text(tmp_path / "g.csv", HEADER, "3,vid0:3 vid0:4 vid0:12 vid0:100 vid0:0")
    score = score_submission(path, read_rated_pairs(pattern), num_classes=CLASSES, segment_size=3)
    assert score.warnings["warning_entries_off_the_segment_grid"] == 2  # 4 and 100
