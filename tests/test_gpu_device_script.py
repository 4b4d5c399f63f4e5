"""bench/gpu_device.sh, the one call a lent GPU machine runs, tried here on a Python that,
like the device's, has torch and the project's dependencies but not the project, and
installs it without a network (issue 15, part 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_script_installs_the_project_offline_and_runs_the_bench(tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    # The packages of this interpreter, seen as plain paths: the project itself is not.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHON=str(python), WORK=str(tmp_path / "work"), VIDEOS="24", PIP_NO_INDEX="1")
    tiny = ["--tiny", "--models=netvlad", "--precisions=fp32", "--compile=off", "--workers=0"]
    tiny += ["--steps=1", "--warmup=1", "--fed_steps=1", "--infer_batch=4"]
    result = subprocess.run(
        ["bash", ROOT / "bench" / "gpu_device.sh", *tiny],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"installed {ROOT / 'yt8m' / '__init__.py'}" in result.stdout  # editable, offline
    report = (tmp_path / "work" / "out" / "gpu.txt").read_text()
    assert "NOT GPU FIGURES" in report and "\nnetvlad | fp32 | eager | 4 |" in report
    assert (tmp_path / "work" / "out" / "gpu.json").exists()
