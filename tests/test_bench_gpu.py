"""bench/gpu.py on the CPU: tiny models, figures labelled as not GPU figures, every printed
column documented by --help (issue 15)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclass looks itself up there)
    spec.loader.exec_module(module)
    return module


FAST = ["--steps=1", "--warmup=1", "--fed_steps=1", "--infer_batch=4", "--videos=24"]


def test_help_documents_every_figure(gpu_bench, capsys):
    with pytest.raises(SystemExit):
        gpu_bench.main(["--help"])
    text = capsys.readouterr().out
    for column, meaning in gpu_bench.FIGURES.items():
        assert f"  {column} " in text and meaning.split()[0] in text, column
    assert "NOT GPU" not in text and "not GPU figures" in text


def test_a_cpu_run_gives_every_figure_and_says_they_are_not_gpu_figures(
    gpu_bench, capsys, tmp_path
):
    out = tmp_path / "rows.json"
    rows = gpu_bench.main(
        [
            *FAST,
            "--models=netvlad",
            "--precisions=bf16",
            "--compile=both",
            "--compile_backend=aot_eager",  # inductor's C++ build takes minutes on 2 cores
            "--workers=1",
            f"--json={out}",
        ]
    )
    rows += gpu_bench.main(
        [*FAST, "--models=lstm", "--precisions=fp32", "--compile=off", "--workers=0"]
    )
    text = capsys.readouterr().out
    assert text.count("CPU RUN WITH TINY MODELS: THESE ARE NOT GPU FIGURES") == 2
    header = next(line for line in text.splitlines() if line.startswith("model |"))
    assert header.split(" | ") == list(gpu_bench.FIGURES)  # each printed figure is documented
    assert [(r["model"], r["prec"], r["comp"]) for r in rows] == [
        ("netvlad", "bf16", "eager"),
        ("netvlad", "bf16", "compiled"),
        ("lstm", "fp32", "eager"),
    ]
    for row in rows:
        assert row["batch"] == 4 and row["params"] > 0 and row["GFLOP"] > 0
        assert row["step ms"] > 0 and row["fed ms"] > 0 and row["infer/s"] > 0
        assert row["floor ms"] == pytest.approx(row["flop ms"] + row["byte ms"])
        assert row["x floor"] == pytest.approx(row["step ms"] / row["floor ms"])
        assert 0 <= row["wait %"] < 100 and row["peak GiB"] is None  # no CUDA memory on a CPU
    saved = json.loads(out.read_text())
    assert saved["tiny"] is True and len(saved["rows"]) == 2


def test_rows_past_the_time_budget_are_listed_as_skipped(gpu_bench, capsys):
    assert gpu_bench.main([*FAST, "--models=netvlad,gru", "--compile=off", "--budget_s=0"]) == []
    assert "skipped (--budget_s=0.0): netvlad/fp32/eager, gru/fp32/eager" in capsys.readouterr().out
