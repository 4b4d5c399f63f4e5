"""Submission files (fidelity.md §6): `VideoId,LabelConfidencePairs`, %f, highest first."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from yt8m.atomic import atomic_output
from yt8m.submission import (
    SUBMISSION_HEADER,
    SubmissionError,
    format_submission_lines,
    read_submission,
    read_submission_chunks,
)


def test_lines_are_top_k_highest_first_with_percent_f():
    probabilities = torch.tensor([[0.1, 0.9, 0.25, 0.9], [0.5, 0.0, 0.125, 0.75]])
    text = format_submission_lines(["a", "b"], probabilities, top_k=3)
    # ties (0.9, 0.9): smaller label first
    assert text == ("a,1 0.900000 3 0.900000 2 0.250000\nb,3 0.750000 0 0.500000 2 0.125000\n")


def test_top_k_larger_than_vocabulary_and_numpy_input():
    text = format_submission_lines(["v"], np.array([[0.2, 0.3]], dtype=np.float32), top_k=50)
    assert text == "v,1 0.300000 0 0.200000\n"


def test_float32_confidence_written_like_the_original():
    value = np.float32(0.1234567)
    text = format_submission_lines(["v"], np.array([[value]]), top_k=1)
    assert text == f"v,0 {float(value):f}\n"


def test_nan_prediction_names_the_video():
    with pytest.raises(SubmissionError, match="'b'"):
        format_submission_lines(["a", "b"], np.array([[0.1, 0.2], [np.nan, 0.1]]), top_k=1)


@pytest.mark.parametrize("name", ["sub.csv", "sub.csv.gz"])
def test_round_trip_through_atomic_output(tmp_path, name):
    rng = np.random.default_rng(0)
    probabilities = rng.random((30, 40))
    ids = [f"vid{i}" for i in range(30)]
    path = tmp_path / name
    with atomic_output(path) as out:
        out.write(SUBMISSION_HEADER + "\n")
        out.write(format_submission_lines(ids, probabilities, top_k=5))
    rows = list(read_submission(path))
    assert [r[0] for r in rows] == ids
    for (_, labels, confidences), row in zip(rows, probabilities, strict=True):
        assert labels.tolist() == np.argsort(-row)[:5].tolist()
        assert confidences == pytest.approx(row[labels], abs=5e-7)


def test_chunks_keep_line_numbers_and_read_lines_of_different_lengths(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("VideoID,LabelConfidencePairs\na,1 0.5 2 0.25\nb,3 0.75\nc,\nd,4  0.5 \n")
    chunks = list(read_submission_chunks(path, lines_per_chunk=2))
    assert [c.first_line for c in chunks] == [2, 4]
    assert [c.pair_counts.tolist() for c in chunks] == [[2, 1], [0, 1]]
    rows = list(read_submission(path))
    assert [r[1].tolist() for r in rows] == [[1, 2], [3], [], [4]]
    assert rows[0][2].tolist() == [0.5, 0.25]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Id,Pairs\na,1 0.5\n", r"p.csv:1: expected the header"),
        ("", r"p.csv:1: expected the header"),
        (f"{SUBMISSION_HEADER}\na,1 0.5\nb 1 0.5\n", r"p.csv:3: malformed line"),
        (f"{SUBMISSION_HEADER}\na,1 0.5\nb,1 0.5 2\n", r"p.csv:3: odd number of tokens"),
        (f"{SUBMISSION_HEADER}\na,1 0.5\nb,1 abc\n", r"p.csv:3: non-numeric confidence 'abc'"),
        (f"{SUBMISSION_HEADER}\na,1 0.5\nb,1 nan\n", r"p.csv:3: non-numeric confidence 'nan'"),
        (f"{SUBMISSION_HEADER}\na,1 0.5\nb,x1 0.5\n", r"p.csv:3: label 'x1'"),
        (f"{SUBMISSION_HEADER}\na,1 0.5\nb,-1 0.5\n", r"p.csv:3: label '-1'"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, body, message):
    path = tmp_path / "p.csv"
    path.write_text(body)
    with pytest.raises(SubmissionError, match=message):
        list(read_submission(path))


def test_gzip_input_and_error_line_in_later_chunk(tmp_path):
    path = tmp_path / "p.csv.gz"
    lines = [f"v{i},{i % 7} 0.5" for i in range(10)] + ["bad,1 oops"]
    with gzip.open(path, "wt") as out:
        out.write(SUBMISSION_HEADER + "\n" + "\n".join(lines) + "\n")
    with pytest.raises(SubmissionError, match=r"p.csv.gz:12: non-numeric confidence 'oops'"):
        list(read_submission_chunks(path, lines_per_chunk=4))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SubmissionError, match="nothere.csv"):
        list(read_submission(tmp_path / "nothere.csv"))
