"""The vectorised reader and writer of submission lines (fidelity.md §6 files, issue 6).

The fast paths must give exactly what Python gives: float(token) / int(token) when
reading, `%d %f` when writing; any other shape goes to the general reader, which gives
the same values or an error naming the file and the line.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yt8m import submission
from yt8m.csv_numbers import format_pair_lines, parse_pair_lines
from yt8m.submission import (
    SUBMISSION_HEADER,
    SubmissionError,
    format_ranked_lines,
    read_submission,
    read_submission_chunks,
)

ids = st.text("abcXYZ019_-:", min_size=1, max_size=12)
labels = st.integers(0, 999_999)
confidences = st.floats(0, 9.9999994, allow_nan=False)
lines = st.lists(
    st.tuples(ids, st.lists(st.tuples(labels, confidences), min_size=1, max_size=6)),
    min_size=1,
    max_size=20,
)


def parse(text: bytes):
    """parse_pair_lines on whole lines, as the reader calls it."""
    buffer = np.frombuffer(text, np.uint8)
    return parse_pair_lines(buffer, np.flatnonzero(buffer == ord("\n")))


def python_values(text: str) -> tuple[list[str], list[int], list[float], list[int]]:
    """ids, labels, confidences, pairs per line: Python's int() and float()."""
    names, labs, confs, counts = [], [], [], []
    for line in text.splitlines():
        name, rest = line.split(",", 1)
        tokens = rest.split()
        names.append(name.strip())
        labs += [int(t) for t in tokens[0::2]]
        confs += [float(t) for t in tokens[1::2]]
        counts.append(len(tokens) // 2)
    return names, labs, confs, counts


@settings(max_examples=200, deadline=None)
@given(lines)
def test_fast_parser_equals_python_float_on_percent_f_lines(rows):
    text = "".join(
        f"{name}," + " ".join(f"{lab:d} {conf:f}" for lab, conf in pairs) + "\n"
        for name, pairs in rows
    )
    parsed = parse(text.encode())
    assert parsed is not None  # this is the shape the fast parser reads
    names, labs, confs, counts = python_values(text)
    assert parsed.ids.astype(str).tolist() == names
    assert parsed.labels.tolist() == labs
    assert parsed.confidences.tolist() == confs  # exact equality, not approx
    assert parsed.counts.tolist() == counts


plain_decimals = st.builds(
    lambda whole, dot, fraction: whole + ("." + fraction if dot or fraction else ""),
    st.text("0123456789", min_size=1, max_size=8),
    st.booleans(),
    st.text("0123456789", max_size=7),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**31 - 1), plain_decimals), min_size=1, max_size=8))
def test_fast_parser_equals_python_float_on_plain_decimals(pairs):
    # %.5f (the original's averaging script), %g without exponent, leading zeros, "5."
    text = "v," + " ".join(f"{lab} {conf}" for lab, conf in pairs) + "\n"
    parsed = parse(text.encode())
    assert parsed is not None
    _, labs, confs, _ = python_values(text)
    assert parsed.labels.tolist() == labs
    assert parsed.confidences.tolist() == confs  # exact equality, not approx


@pytest.mark.parametrize(
    "line",
    [
        "v,1 0.5",
        "v,1 10.000000",
        "v,1 0.1234567",
        "v,1234567 0.500000",
        "v,2147483647 0.12345678901234",  # the largest label, 15 digits
        "v.1:x,1 5.",  # a dot in the id
    ],
)
def test_plain_shapes_are_read_by_the_fast_parser(line):
    parsed = parse((line + "\n").encode())
    names, labs, confs, _ = python_values(line)
    assert parsed is not None
    assert (parsed.ids.astype(str).tolist(), parsed.labels.tolist()) == (names, labs)
    assert parsed.confidences.tolist() == confs


@pytest.mark.parametrize(
    "line",
    [
        "v,1 1e-05",
        "v,1 -0.500000",
        "v,1 +0.500000",
        "v,1 .5000000",
        "v,1 0.1234567890123456",  # 16 digits: not exact as integer / 10**f
        "v,2147483648 0.5",  # a label above 2**31 - 1 (the general reader's error)
        "v,12345678901 0.5",
        "v,1 0.500000 ",  # trailing space
        "v,1  0.500000",  # double space
        "v,1\t0.500000",
        "v,1 0.500000\r",
        "v,",
        "v,1",
        " v,1 0.500000",  # a space in the id
        "vé,1 0.500000",
        "v,1 0.500000,2 0.250000",
        ",1 0.500000",
    ],
)
def test_other_shapes_are_left_to_the_general_reader(line):
    assert parse((line + "\n").encode()) is None


@pytest.mark.parametrize(
    "tokens",
    [
        ["0 0.5", "1 1e-05", "2 0.000001", "3 12.5", "4 0.1234567890123456789"],
        ["0 1", "1 .5", "2 5.", "3 9.999999", "4 0.30000000000000004", "5 2.5E-3"],
        ["7 0.500000", "8 0.250000"],
        ["007 -0.0", "10 1e300", "11 123456.789"],
    ],
)
def test_reading_any_number_shape_gives_python_floats(tmp_path, tokens):
    # Fast lines around an odd one: the chunk is read by the general reader.
    body = ["a,1 0.500000 2 0.250000", "b," + " ".join(tokens), "c,3 0.125000"]
    path = tmp_path / "p.csv"
    path.write_text(SUBMISSION_HEADER + "\n" + "\n".join(body) + "\n")
    rows = list(read_submission(path))
    _, labs, confs, _ = python_values("\n".join(body))
    assert np.concatenate([r[1] for r in rows]).tolist() == labs
    assert np.concatenate([r[2] for r in rows]).tolist() == confs


def test_crlf_reads_like_text_mode_and_a_missing_last_newline_is_a_cut_short_file(tmp_path):
    """Issue 11 case 3: a file that does not end with a newline was cut off mid-line."""
    lines = ["a,1 0.500000 2 0.250000", "b,3 0.750000"]
    lf, crlf = tmp_path / "lf.csv", tmp_path / "crlf.csv"
    crlf.write_bytes((SUBMISSION_HEADER + "\r\n" + "\r\n".join(lines) + "\r\n").encode())
    rows = [(v, lab.tolist(), conf.tolist()) for v, lab, conf in read_submission(crlf)]
    assert rows == [("a", [1, 2], [0.5, 0.25]), ("b", [3], [0.75])]
    lf.write_bytes((SUBMISSION_HEADER + "\n" + "\n".join(lines)).encode())
    with pytest.raises(SubmissionError, match=r"lf.csv:3: the file ends inside this line"):
        list(read_submission(lf))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("v7,1 0.5x0000", r"p.csv:9: non-numeric confidence '0.5x0000'"),
        ("v7,1 0.500000 2", r"p.csv:9: odd number of tokens"),
        ("v7,x 0.500000", r"p.csv:9: label 'x'"),
        ("v7 1 0.500000", r"p.csv:9: malformed line"),
    ],
)
def test_errors_in_a_fast_file_name_the_file_and_line(tmp_path, bad, message):
    good = [f"v{i},{i} 0.500000 {i + 1} 0.250000" for i in range(12)]
    good[7] = bad
    path = tmp_path / "p.csv"
    path.write_text(SUBMISSION_HEADER + "\n" + "\n".join(good) + "\n")
    with pytest.raises(SubmissionError, match=message):
        list(read_submission_chunks(path, lines_per_chunk=4))


@pytest.mark.parametrize("first_read", [64, 1 << 20])
def test_chunks_have_the_asked_number_of_lines_whatever_the_read_sizes(
    tmp_path, monkeypatch, first_read
):
    monkeypatch.setattr(submission, "_FIRST_READ", first_read)
    path = tmp_path / "p.csv"
    body = "".join(f"v{i},{i} 0.500000\n" for i in range(10_000))
    path.write_text(SUBMISSION_HEADER + "\n" + body)
    chunks = list(read_submission_chunks(path, lines_per_chunk=3000))
    assert [len(c.ids) for c in chunks] == [3000, 3000, 3000, 1000]
    assert [c.first_line for c in chunks] == [2, 3002, 6002, 9002]
    assert np.concatenate([c.labels for c in chunks]).tolist() == list(range(10_000))
    assert chunks[-1].video_ids[-1] == "v9999"


def percent_f(ids_: list[str], labs: np.ndarray, values: np.ndarray) -> str:
    """`%s,` then `%d %f` pairs (f"{x:f}" is "%f" % x), padding (label < 0) left out."""
    return "".join(
        f"{name},"
        + " ".join(f"{lab:d} {val:f}" for lab, val in zip(row, vals, strict=True) if lab >= 0)
        + "\n"
        for name, row, vals in zip(ids_, labs.tolist(), values.tolist(), strict=True)
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(labels, st.floats(0, 999.9999994)), min_size=3, max_size=3),
        min_size=1,
        max_size=10,
    ),
    st.integers(0, 3),
)
def test_writer_equals_percent_f(rows, padding):
    labs = np.array([[lab for lab, _ in row] for row in rows])
    values = np.array([[val for _, val in row] for row in rows])
    labs[:, 3 - padding :] = -1  # rows may end in padding
    names = [f"id{i}" for i in range(len(rows))]
    text = format_pair_lines(np.array(names, dtype="S"), labs, values)
    assert text is not None
    assert text.decode() == percent_f(names, labs, values)


def test_writer_rounds_ties_and_near_ties_like_percent_f():
    # j / 128: exact binary ties at the 6th decimal (half-even); neighbours of ties
    values = np.array([j / 128 for j in range(1, 128, 2)] + [0.0000005, 0.1234565, 2.5e-7])
    values = np.concatenate([values, np.nextafter(values, 0), np.nextafter(values, 1)])
    labs = np.arange(values.size).reshape(1, -1)
    text = format_pair_lines(np.array([b"v"]), labs, values.reshape(1, -1))
    assert text.decode() == percent_f(["v"], labs, values.reshape(1, -1))


@pytest.mark.parametrize("value", [-0.5, -0.0, 1000.0, 1e300, np.inf, np.nan])
def test_values_outside_the_fast_range_are_written_by_python(value):
    labs, values = np.array([[3, 1]]), np.array([[value, 0.25]])
    assert format_pair_lines(np.array([b"v"]), labs, values) is None
    assert format_ranked_lines(["v"], labs, values) == percent_f(["v"], labs, values)


@pytest.mark.parametrize("names", [["vé", "w"], ["v\x00", "w"], np.array(["v", "w"], object)])
def test_ids_the_fast_writer_cannot_hold_are_written_by_python(names):
    labs, values = np.array([[1], [2]]), np.array([[0.5], [0.25]])
    expected = percent_f(list(names), labs, values)
    assert format_ranked_lines(names, labs, values) == expected


@settings(max_examples=300, deadline=None)
@given(st.text("0123456789. ,\t\r-ex", min_size=1, max_size=60))
def test_any_text_is_read_as_python_reads_it_or_left_to_the_general_reader(body):
    # fidelity.md §6 files: the fast parser never reads a line differently from Python
    text = "v," + body + "\n"
    parsed = parse(text.encode())
    if parsed is not None:
        names, labs, confs, counts = python_values(text)
        assert parsed.ids.astype(str).tolist() == names
        assert (parsed.labels.tolist(), parsed.confidences.tolist()) == (labs, confs)
        assert parsed.counts.tolist() == counts
