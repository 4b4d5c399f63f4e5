"""`yt8m average` / `yt8m ensemble apply` on bad input (issue 11 cases 2, 3, 4, 8): a clear
error naming the file, and nothing written or replaced. fidelity.md §6: the averaging and
the submission format (one line per video, `%f` pairs)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from tests.test_ensemble import HEADER, labelled_split, model_file, rows, write
from yt8m.cli import run_command
from yt8m.ensemble import holdout_split
from yt8m.metrics import gap
from yt8m.submission import read_submission


def _folder(tmp_path) -> list[tuple[str, float]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())


def test_files_whose_videos_differ_are_an_error_naming_each_file_and_its_counts(tmp_path, capsys):
    """Case 2: averaged into a union with halved scores, exit 0."""
    a = write(tmp_path / "a.csv", ["p,1 0.800000", "q,2 0.400000", "s,3 0.5"])
    b = write(tmp_path / "b.csv", ["p,5 0.600000", "r,2 0.200000", "s,3 0.5"])
    c = write(tmp_path / "c.csv", ["s,3 0.5", "q,2 0.4", "p,1 0.3"])  # same videos, reordered
    out = tmp_path / "avg.csv"
    assert run_command("average", [a, b, c, f"--output_file={out}", "--no_progress"]) == 2
    error = capsys.readouterr().err
    assert "b.csv lacks 1 of the 3 videos of" in error and "a.csv and adds 1" in error
    assert "c.csv" not in error and "--allow_missing_videos" in error
    assert len(error.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".avg*"))


def test_allow_missing_videos_averages_anyway_and_warns_with_the_counts(tmp_path, capsys):
    a = write(tmp_path / "a.csv", ["p,1 0.800000", "q,2 0.400000"])
    b = write(tmp_path / "b.csv", ["p,5 0.600000", "r,2 0.200000"])
    out = tmp_path / "avg.csv"
    argv = [a, b, f"--output_file={out}", "--no_progress", "--allow_missing_videos"]
    assert run_command("average", argv) == 0
    warned = capsys.readouterr().err
    assert "warning: " in warned and "b.csv lacks 1 of the 2 videos" in warned
    assert "adds 1" in warned and "absent videos count 0" in warned
    assert rows(out) == {"p": [(1, 0.4), (5, 0.3)], "q": [(2, 0.2)], "r": [(2, 0.1)]}


def test_a_file_cut_off_mid_number_is_an_error_and_nothing_is_written(tmp_path, capsys):
    """Case 3: the last line lost its end ('0.4' of '0.400000') and was accepted."""
    a = write(tmp_path / "a.csv", ["p,1 0.800000", "q,2 0.400000"])
    cut = tmp_path / "b.csv"
    cut.write_text(HEADER + "p,1 0.600000\nq,2 0.4")
    out = tmp_path / "avg.csv"
    assert run_command("average", [a, str(cut), f"--output_file={out}", "--no_progress"]) == 2
    error = capsys.readouterr().err
    assert "b.csv:3: the file ends inside this line" in error and "cut short" in error
    assert not out.exists()


def test_a_gzip_stream_that_ends_early_is_an_error(tmp_path, capsys):
    a = write(tmp_path / "a.csv", [f"v{i},1 0.5" for i in range(2000)])
    whole = gzip.compress((tmp_path / "a.csv").read_bytes())
    cut = tmp_path / "b.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "avg.csv"
    assert run_command("average", [a, str(cut), f"--output_file={out}", "--no_progress"]) == 2
    error = capsys.readouterr().err
    assert "b.csv.gz" in error and "truncated or damaged" in error
    assert not out.exists()


def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path, capsys):
    """Case 4: `--output_file` equal to an input replaced that input."""
    a = write(tmp_path / "a.csv", ["p,1 0.800000"])
    b = write(tmp_path / "b.csv", ["p,1 0.600000"])
    before = _folder(tmp_path)
    for spelling in (b, str(tmp_path / "." / "b.csv")):
        assert run_command("average", [a, b, f"--output_file={spelling}", "--no_progress"]) == 2
        assert "is the input" in capsys.readouterr().err
    assert _folder(tmp_path) == before


def test_replacing_an_existing_output_is_said(tmp_path, capsys):
    a = write(tmp_path / "a.csv", ["p,1 0.800000"])
    out = tmp_path / "avg.csv"
    out.write_text("an older submission\n")
    assert run_command("average", [a, f"--output_file={out}", "--no_progress"]) == 0
    assert f"replacing the existing {out}" in capsys.readouterr().err
    assert rows(out) == {"p": [(1, 0.8)]}


def test_a_weight_that_is_not_a_number_is_named_as_such(tmp_path, capsys):
    """Case 8: `a.csv:abc` said that the file was missing."""
    a = write(tmp_path / "a.csv", ["p,1 0.800000"])
    out = tmp_path / "avg.csv"
    assert run_command("average", [f"{a}:abc", f"--output_file={out}", "--no_progress"]) == 2
    error = capsys.readouterr().err
    assert "the weight 'abc' is not a number" in error and "FILE:WEIGHT" in error
    assert "missing" not in error and not out.exists()


@pytest.mark.parametrize("name", ["odd:name.csv", "dir:x/a.csv"])
def test_a_colon_that_is_part_of_the_path_is_not_a_weight(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    write(path, ["p,1 0.800000"])
    assert run_command("average", [name, "--output_file=avg.csv", "--no_progress"]) == 0
    assert rows(tmp_path / "avg.csv") == {"p": [(1, 0.8)]}


def test_holdout_scores_the_fitted_weights_on_videos_they_were_not_fitted_on(tmp_path, capsys):
    """Less friction: the demo's fitted ensemble was scored on the videos it was fitted on."""
    rng = np.random.default_rng(3)
    labels, pattern = labelled_split(tmp_path, rng)
    files = [model_file(tmp_path, f"m{i}.csv", labels, rng, s) for i, s in enumerate([1.0, 0.2])]
    report_path = tmp_path / "weights.json"
    argv = ["fit", *files, f"--labels_pattern={pattern}", "--num_classes=25", "--top_k=5"]
    assert run_command("ensemble", [*argv, f"--output={report_path}", "--holdout=0.5"]) == 0
    assert "not fitted on" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    fitted_on, held_out = holdout_split(60, 0.5)
    assert report["num_fitted_videos"] == len(fitted_on) == 30
    assert report["holdout"]["num_videos"] == len(held_out) == 30
    # the held-out GAP is that of the weighted mean on those videos alone (yt8m.metrics)
    weights = [m["weight"] for m in report["models"]]
    ids = list(labels)
    held = {ids[i]: row for row, i in enumerate(held_out)}
    dense, truth = np.zeros((len(held), 25)), np.zeros((len(held), 25), dtype=bool)
    for vid, row in held.items():
        truth[row, labels[vid]] = True
    for path, weight in zip(files, weights, strict=True):
        for vid, labs, conf in read_submission(path):
            if vid in held:
                dense[held[vid], labs] += weight * conf
    assert report["holdout"]["fitted_gap"] == pytest.approx(gap(dense, truth, top_k=5), abs=1e-6)
