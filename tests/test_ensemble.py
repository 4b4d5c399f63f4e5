"""Averaging and learned ensemble weights (fidelity.md §6, issue 6)."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from yt8m.cli import run_command
from yt8m.data.records import encode_video_record
from yt8m.data.tfrecord import TFRecordWriter
from yt8m.ensemble import (
    WILLOW_INPUTS,
    WILLOW_OUTPUT,
    EnsembleError,
    FittingProblem,
    average_files,
    average_main,
    ensemble_main,
    parse_models,
)
from yt8m.metrics import gap
from yt8m.submission import SUBMISSION_HEADER, SubmissionError, read_submission

HEADER = SUBMISSION_HEADER + "\n"


def write(path, lines: list[str]) -> str:
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return str(path)


def rows(path) -> dict[str, list[tuple[int, float]]]:
    return {
        vid: list(zip(labels.tolist(), conf.tolist(), strict=True))
        for vid, labels, conf in read_submission(path)
    }


def reference_average(files: list[tuple[str, float]], top_k: int) -> dict[str, list]:
    """Dictionary-of-counters average written from the definition (all pairs)."""
    sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for path, weight in files:
        for vid, labels, conf in read_submission(path):
            for label, value in zip(labels.tolist(), conf.tolist(), strict=True):
                sums[vid][label] += weight * value
    total = sum(w for _, w in files)
    return {
        vid: sorted(((lab, s / total) for lab, s in by_label.items()), key=lambda p: (-p[1], p[0]))[
            :top_k
        ]
        for vid, by_label in sums.items()
    }


def test_exact_weighted_means_by_hand(tmp_path):
    a = write(tmp_path / "a.csv", ["x,1 0.500000 2 0.250000", "y,3 1.000000"])
    b = write(tmp_path / "b.csv", ["x,2 0.750000 4 0.125000", "y,3 0.500000 1 0.250000"])
    out = tmp_path / "avg.csv"
    assert average_files(parse_models([a, f"{b}:3"]), out, progress=False) == 2
    assert out.read_text() == (
        HEADER + "x,2 0.625000 1 0.125000 4 0.093750\ny,3 0.625000 1 0.187500\n"
    )


def test_every_pair_is_read_not_only_the_first_half(tmp_path):
    # The original read pairs 0 and 1 of this line only; the best labels are 3 and 4.
    a = write(tmp_path / "a.csv", ["v,1 0.100000 2 0.200000 3 0.900000 4 0.800000"])
    out = tmp_path / "avg.csv"
    average_files(parse_models([a]), out, top_k=20, progress=False)
    assert rows(out) == {"v": [(3, 0.9), (4, 0.8), (2, 0.2), (1, 0.1)]}


def test_sums_run_in_file_order_so_equal_means_tie_exactly(tmp_path):
    # Added left to right, both labels sum to 3.260059 exactly (numpy's reduceat would
    # give 3.2600590000000005 for label 4078): the tie puts the smaller label first.
    first = [0.86194, 0.00498, 0.686467, 0.976419, 0.047762, 0.682491]
    second = [0.810009, 0.968596, 0.422726, 0.744037, 0.314691]
    files = []
    for f, a in enumerate(first):
        pairs = f"4078 {a:f}" + (f" 2939 {second[f]:f}" if f < len(second) else "")
        files.append(write(tmp_path / f"m{f}.csv", [f"v,{pairs}"]))
    out = tmp_path / "avg.csv"
    average_files(parse_models(files), out, progress=False)
    assert [lab for lab, _ in rows(out)["v"]] == [2939, 4078]


def test_absent_labels_and_absent_videos_count_zero(tmp_path):
    a = write(tmp_path / "a.csv", ["p,1 0.800000", "q,2 0.400000"])
    b = write(tmp_path / "b.csv", ["p,5 0.600000", "r,2 0.200000"])
    out = tmp_path / "avg.csv"
    average_files(parse_models([a, b]), out, progress=False, allow_missing=True)
    assert rows(out) == {"p": [(1, 0.4), (5, 0.3)], "q": [(2, 0.2)], "r": [(2, 0.1)]}


@pytest.mark.parametrize("lines_per_chunk", [3, 1000])
def test_matches_reference_on_random_files_aligned_then_shuffled(tmp_path, lines_per_chunk):
    rng = np.random.default_rng(lines_per_chunk)
    files = []
    for f in range(3):
        videos = [f"v{i}" for i in range(40) if f == 0 or rng.random() < 0.9]
        tail = videos[12:]
        rng.shuffle(tail)  # the first 12 lines agree across files (streamed), then not
        lines = []
        for vid in videos[:12] + tail:
            pairs = int(rng.integers(0, 8))
            labels = rng.choice(30, pairs, replace=False)
            conf = rng.integers(0, 64, pairs) / 64  # exact in binary: sums independent of order
            lines.append(
                vid + "," + " ".join(f"{a} {c:f}" for a, c in zip(labels, conf, strict=True))
            )
        files.append((write(tmp_path / f"m{f}.csv", lines), float(rng.integers(1, 4))))
    out = tmp_path / "avg.csv.gz"
    models = parse_models([p for p, _ in files], [w for _, w in files])
    average_files(
        models, out, top_k=5, lines_per_chunk=lines_per_chunk, progress=False, allow_missing=True
    )
    expected = reference_average(files, top_k=5)
    got = rows(out)
    assert set(got) == set(expected)
    for vid, pairs in expected.items():
        assert [lab for lab, _ in got[vid]] == [lab for lab, _ in pairs]
        assert [c for _, c in got[vid]] == pytest.approx([c for _, c in pairs], abs=5e-7)


@pytest.mark.parametrize("lines_per_chunk", [4, 1000])
def test_fixed_width_files_of_any_number_shape_give_percent_f_of_the_means(
    tmp_path, lines_per_chunk
):
    # Fast-shape files (%f, 5 or 3 pairs a line) and one written with %g (read by the
    # general reader) stay aligned; the output is the exact means written with %f.
    rng = np.random.default_rng(7)
    files = []
    for f, (pairs, shape) in enumerate([(5, "f"), (3, "f"), (5, "g")]):
        lines = []
        for i in range(10):
            labels = rng.choice(12, pairs, replace=False)
            conf = rng.integers(0, 64, pairs) / 64
            text = " ".join(f"{a} {c:{shape}}" for a, c in zip(labels, conf, strict=True))
            lines.append(f"v{i},{text}")
        files.append((write(tmp_path / f"m{f}.csv", lines), float(f + 1)))
    out = tmp_path / "avg.csv"
    models = parse_models([p for p, _ in files], [w for _, w in files])
    average_files(models, out, top_k=6, lines_per_chunk=lines_per_chunk, progress=False)
    expected = reference_average(files, top_k=6)
    assert out.read_text() == HEADER + "".join(
        f"{vid}," + " ".join(f"{lab:d} {mean:f}" for lab, mean in pairs) + "\n"
        for vid, pairs in expected.items()
    )


def random_files(tmp_path, rng, labels: np.ndarray, videos: int = 30) -> list[tuple[str, float]]:
    """Three aligned files whose pairs draw from `labels` (a label may repeat in a line)."""
    files = []
    for f in range(3):
        lines = []
        for i in range(videos):
            chosen = rng.choice(labels, int(rng.integers(0, 9)))
            conf = rng.integers(0, 64, chosen.size) / 64  # exact in binary
            pairs = " ".join(f"{a} {c:f}" for a, c in zip(chosen, conf, strict=True))
            lines.append(f"v{i},{pairs}")
        files.append((write(tmp_path / f"m{f}.csv", lines), float(f + 1)))
    return files


@pytest.mark.parametrize(
    "labels",
    [np.arange(12), np.array([0, 7, 70_000, 2**20, 2**31 - 1])],
    ids=["small labels", "large labels renumbered"],
)
def test_matches_reference_across_label_ranges(tmp_path, labels):
    # fidelity.md §6 means; large label numbers are renumbered before summing
    files = random_files(tmp_path, np.random.default_rng(labels.size), labels)
    out = tmp_path / "avg.csv"
    models = parse_models([p for p, _ in files], [w for _, w in files])
    average_files(models, out, top_k=4, lines_per_chunk=7, progress=False)
    expected = reference_average(files, top_k=4)
    got = rows(out)
    assert list(got) == [f"v{i}" for i in range(30) if f"v{i}" in expected]
    for vid, pairs in expected.items():
        assert [lab for lab, _ in got[vid]] == [lab for lab, _ in pairs]
        # written with %f: 6 decimals, rounded half to even
        assert [c for _, c in got[vid]] == pytest.approx([c for _, c in pairs], abs=1e-6)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (["x,1 0.5", "y 1 0.5"], r"b.csv:3: malformed line"),
        (["x,1 0.5", "y,1 high"], r"b.csv:3: non-numeric confidence 'high'"),
        (["x,1 0.5", "x,2 0.5"], r"b.csv:3: duplicated video id 'x'"),
        (["y,1 0.5", "z,2 0.5", "y,3 0.5"], r"b.csv:4: duplicated video id 'y'"),
    ],
)
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, second, message):
    a = write(tmp_path / "a.csv", ["x,1 0.5", "y,1 0.5"])
    b = write(tmp_path / "b.csv", second)
    out = tmp_path / "avg.csv"
    out.write_text("previous content\n")
    with pytest.raises((EnsembleError, SubmissionError), match=message):
        average_files(parse_models([a, b]), out, lines_per_chunk=1, progress=False)
    assert out.read_text() == "previous content\n"
    assert not list(tmp_path.glob(".avg*"))  # no temporary file left behind


def test_wrong_header_is_an_error_and_nothing_is_written(tmp_path):
    a = write(tmp_path / "a.csv", ["x,1 0.5"])
    b = tmp_path / "b.csv"
    b.write_text("id,preds\nx,1 0.5\n")
    with pytest.raises(SubmissionError, match=r"b.csv:1: expected the header"):
        average_files(parse_models([a, str(b)]), tmp_path / "avg.csv", progress=False)
    assert not (tmp_path / "avg.csv").exists()


def test_bad_weights_are_errors(tmp_path):
    with pytest.raises(EnsembleError, match="non-negative"):
        parse_models(["a.csv:-1"])
    with pytest.raises(EnsembleError, match="2 weights for 1 files"):
        parse_models(["a.csv"], [1.0, 2.0])
    with pytest.raises(EnsembleError, match="positive weight"):
        parse_models(["a.csv:0"])


def test_no_arguments_average_the_original_seven_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(WILLOW_INPUTS):
        write(tmp_path / f"{name}.csv", [f"v,{i} 0.700000 9 0.070000"])
    assert average_main(["--no_progress"]) == 0
    got = rows(tmp_path / WILLOW_OUTPUT)["v"]
    # equal weights 1/7: labels 0..6 get 0.1 each (tied: smaller label first), 9 gets 0.07
    assert [lab for lab, _ in got] == [0, 1, 2, 3, 4, 5, 6, 9]
    assert [c for _, c in got] == pytest.approx([0.1] * 7 + [0.07])


def test_missing_seed_files_list_the_close_matches(tmp_path, monkeypatch, capsys):
    # fidelity.md §6: the script names test-GRU-0002-1200-2, inference writes test-GRU-0002-1200.
    monkeypatch.chdir(tmp_path)
    for name in WILLOW_INPUTS:
        if name != "test-GRU-0002-1200-2":
            write(tmp_path / f"{name}.csv", ["v,1 0.5"])
    write(tmp_path / "test-GRU-0002-1200.csv", ["v,1 0.5"])
    assert run_command("average", []) == 2
    error = capsys.readouterr().err
    assert "test-GRU-0002-1200-2.csv (close match: test-GRU-0002-1200.csv" in error
    assert not (tmp_path / WILLOW_OUTPUT).exists()


# ---- learned weights ----


def labelled_split(tmp_path, rng, videos=60, classes=25):
    labels = {
        f"v{i}": rng.choice(classes, int(rng.integers(0, 4)), replace=False) for i in range(videos)
    }
    pattern = str(tmp_path / "val.tfrecord")
    with TFRecordWriter(pattern) as writer:
        for vid, labs in labels.items():
            writer.write(encode_video_record(vid, labs, {"mean_rgb": np.zeros(2, np.float32)}))
    return labels, pattern


def model_file(tmp_path, name, labels, rng, skill, classes=25, pairs=6):
    lines = []
    for vid, labs in labels.items():
        scores = rng.random(classes)
        scores[labs] += skill
        top = np.argsort(-scores)[:pairs]
        lines.append(vid + "," + " ".join(f"{c} {scores[c] / (1 + skill):f}" for c in top))
    return write(tmp_path / name, lines)


def test_fitting_problem_gap_equals_metrics_gap_of_the_mean(tmp_path):
    rng = np.random.default_rng(0)
    labels, pattern = labelled_split(tmp_path, rng)
    files = [
        model_file(tmp_path, f"m{i}.csv", labels, rng, skill) for i, skill in enumerate([0.8, 0.2])
    ]
    from yt8m.data.records import iter_video_labels

    problem = FittingProblem(files, iter_video_labels(pattern, 25), lines_per_chunk=7)
    dense = np.zeros((len(labels), 25))
    truth = np.zeros((len(labels), 25), dtype=bool)
    index = {vid: i for i, vid in enumerate(labels)}
    for vid, labs in labels.items():
        truth[index[vid], labs] = True
    for path, weight in zip(files, [0.25, 0.75], strict=True):
        for vid, labs, conf in read_submission(path):
            dense[index[vid], labs] += weight * conf
    assert problem.gap(np.array([1.0, 3.0]), top_k=3) == pytest.approx(
        gap(dense, truth, top_k=3), abs=1e-6
    )


def test_fit_never_worse_than_equal_weights_and_apply_writes_the_submission(tmp_path, capsys):
    rng = np.random.default_rng(1)
    labels, pattern = labelled_split(tmp_path, rng)
    skills = [1.0, 0.0, 0.3]
    val = [model_file(tmp_path, f"val{i}.csv", labels, rng, s) for i, s in enumerate(skills)]
    weights_json = tmp_path / "weights.json"
    assert (
        ensemble_main(
            [
                "fit",
                *val,
                "--labels_pattern",
                pattern,
                "--num_classes",
                "25",
                "--output",
                str(weights_json),
            ]
        )
        == 0
    )
    report = json.loads(weights_json.read_text())
    assert report["fitted_gap"] >= report["equal_weight_gap"]
    weights = [m["weight"] for m in report["models"]]
    assert all(w >= 0 for w in weights) and sum(weights) == pytest.approx(1.0)
    assert weights[0] > weights[1]  # the skilled model weighs more than the random one
    assert "equal weights GAP" in capsys.readouterr().out

    test = [model_file(tmp_path, f"test{i}.csv", labels, rng, s) for i, s in enumerate(skills)]
    out = tmp_path / "sub.csv"
    ensemble_main(["apply", *test, "--weights", str(weights_json), "--output_file", str(out)])
    expected = tmp_path / "expected.csv"
    average_files(parse_models(test, weights), expected, progress=False)
    assert out.read_text() == expected.read_text()
    with pytest.raises(EnsembleError, match="3 weights"):
        ensemble_main(
            ["apply", *test[:2], "--weights", str(weights_json), "--output_file", str(out)]
        )


def test_fit_rejects_a_video_outside_the_labelled_split(tmp_path):
    rng = np.random.default_rng(2)
    labels, pattern = labelled_split(tmp_path, rng, videos=5)
    bad = write(tmp_path / "m.csv", ["v0,1 0.5", "stranger,1 0.5"])
    with pytest.raises(EnsembleError, match=r"m.csv:3: video 'stranger'"):
        ensemble_main(["fit", bad, "--labels_pattern", pattern, "--num_classes", "25"])
