"""`yt8m demo` (the README's main command), shortened for CI: every step runs and writes
its files. (Learning above the baseline at this size is not asserted: 3 steps.)"""

import re

import pytest

from yt8m.demo import DemoError, main


def _gaps(table: str) -> dict[str, float]:
    rows = {}
    for line in table.splitlines():
        match = re.match(r"(.+?)\s{2,}(\S+)\s+(\d\.\d{4})\s", line)
        if match:
            rows[match.group(1).strip()] = float(match.group(3))
    return rows


def test_shortened_demo_runs_every_step(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--output", str(out), *DEMO_CI_ARGS]) == 0
    printed = capsys.readouterr().out
    gaps = _gaps(printed[printed.index("[6/6]") :])
    assert "Baseline: logistic on averaged frames" in gaps
    assert len(gaps) == 10, gaps  # seven seed models, two ensembles, the baseline
    assert all(0.0 <= value <= 1.0 for value in gaps.values())
    submissions = sorted(p.name for p in (out / "submissions").iterdir())
    assert "WILLOW_submission.csv" in submissions
    assert "WILLOW_fitted_submission.csv" in submissions
    assert len([s for s in submissions if s.startswith("test-")]) == 8  # seven + baseline
    assert (out / "ensemble_weights.json").exists()


DEMO_CI_ARGS = [
    "--videos",
    "80",
    "--steps",
    "3",
    "--classes",
    "10",
    "--recalibrate_batch_norm",
    "2",
]


def test_unknown_model_lists_the_seven(tmp_path):
    with pytest.raises(DemoError, match="GRU-0002-1200"):
        main(["--output", str(tmp_path), "--models", "9"])
