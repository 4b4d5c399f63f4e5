"""Remote data patterns (issue 11 case 9) through fsspec, tested on its `memory://` file
system: the same batches and predictions as the local files; a missing back end (gcsfs for
gs://) is a one-line error naming `pip install 'yt8m[gcs]'`; remote outputs are refused.
fidelity.md §1: the same TFRecords, wherever they are stored."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import fsspec
import pytest

from tests.test_inference import TinySetup
from tests.test_train import tiny_argv, write_tiny_training_set
from yt8m.checkpoint import latest_checkpoint, load_checkpoint
from yt8m.cli import run_command
from yt8m.data.remote import RemoteDataError
from yt8m.data.tfrecord import expand_pattern
from yt8m.submission import read_submission


def to_memory(pattern: str, folder: str) -> str:
    """Copy the files of a local glob into fsspec's memory file system; their glob there."""
    memory = fsspec.filesystem("memory")
    for path in expand_pattern(pattern):
        memory.pipe(f"/{folder}/{Path(path).name}", Path(path).read_bytes())
    return f"memory://{folder}/{Path(pattern).name}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinySetup:
    return TinySetup(tmp_path_factory.mktemp("tiny"))


def test_infer_and_eval_read_a_remote_pattern_as_the_local_files(tiny, tmp_path):
    remote = to_memory(tiny.test, "infer-test")
    predictions = {}
    for name, pattern in (("local", tiny.test), ("remote", remote)):
        output = tmp_path / f"{name}.csv"
        argv = tiny.args(f"--input_data_pattern={pattern}", f"--output_file={output}")
        assert run_command("infer", [*argv, "--deterministic_sampling"]) == 0
        predictions[name] = [(v, list(lab), list(c)) for v, lab, c in read_submission(output)]
    assert len(predictions["local"]) == 13 and predictions["remote"] == predictions["local"]
    validate = to_memory(tiny.validate, "eval-validate")
    argv = tiny.args(f"--eval_data_pattern={validate}", "--run_once", "--deterministic_sampling")
    assert run_command("eval", argv) == 0


def test_train_reads_a_remote_pattern(tmp_path):
    local = write_tiny_training_set(tmp_path / "data", 20)
    remote = to_memory(local, "train-data")
    for name, pattern in (("local", local), ("remote", remote)):
        assert run_command("train", tiny_argv(pattern, tmp_path / name, "--max_steps=3")) == 0
    weights = [
        load_checkpoint(latest_checkpoint(tmp_path / n)).model_state for n in ("local", "remote")
    ]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


@pytest.fixture
def without_gcsfs(monkeypatch):
    """gcsfs absent, whatever this machine has installed."""
    loaded = importlib.import_module("fsspec.registry")._registry  # back ends imported so far
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    for protocol in ("gs", "gcs"):
        monkeypatch.delitem(loaded, protocol, raising=False)


def test_gs_without_gcsfs_is_one_line_naming_the_extra(tiny, tmp_path, without_gcsfs, capsys):
    pattern = "gs://a-bucket/yt8m/test*.tfrecord"
    with pytest.raises(RemoteDataError, match=r"pip install 'yt8m\[gcs\]'"):
        expand_pattern(pattern)
    output = tmp_path / "sub.csv"
    argv = tiny.args(f"--input_data_pattern={pattern}", f"--output_file={output}")
    assert run_command("infer", argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "reading gs:// needs a package" in error
    assert "pip install 'yt8m[gcs]'" in error and not output.exists()
    train_dir = tmp_path / "run"
    assert run_command("train", tiny_argv(pattern, train_dir, "--max_steps=1")) == 2
    assert "pip install 'yt8m[gcs]'" in capsys.readouterr().err and not train_dir.exists()


def test_an_unknown_protocol_is_named(tmp_path):
    with pytest.raises(RemoteDataError, match="nosuchfs://x/.*Protocol not known"):
        expand_pattern("nosuchfs://x/train*.tfrecord")


@pytest.mark.parametrize(
    ("command", "flag"),
    [("train", "--train_dir"), ("eval", "--train_dir"), ("infer", "--output_file")],
)
def test_remote_outputs_are_refused(tiny, command, flag, capsys):
    """A gs:// train_dir or output was written to a local folder named `gs:`."""
    argv = tiny.args(f"--input_data_pattern={tiny.test}", f"{flag}=gs://a-bucket/out")
    assert run_command(command, argv) == 2
    assert "remote paths are read (data patterns), never written" in capsys.readouterr().err
    assert not Path("gs:").exists()


def test_remote_average_output_is_refused(tmp_path, capsys):
    a = tmp_path / "a.csv"
    a.write_text("VideoId,LabelConfidencePairs\np,1 0.5\n")
    assert run_command("average", [str(a), "--output_file=gs://b/sub.csv", "--no_progress"]) == 2
    assert "outputs are written locally" in capsys.readouterr().err
