"""`yt8m eval` and `yt8m infer` on bad input (issue 11): clear errors, nothing written, and
the data format taken from the checkpoint so that the README's own commands work
(fidelity.md §6: inference restored the whole graph from the checkpoint, so the flags on
its command line did not matter)."""

from __future__ import annotations

import gzip
import json
import logging
import shlex
from pathlib import Path

import pytest

from tests.test_checkpoint_checksum import flip_byte_inside
from tests.test_inference import TinySetup
from yt8m.checkpoint import load_checkpoint
from yt8m.cli import run_command

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinySetup:
    return TinySetup(tmp_path_factory.mktemp("tiny"))


def readme_command(command: str) -> list[str]:
    """The flags of the README's first `yt8m COMMAND ...` example (its quick start), split
    as a shell would."""
    line = next(ln for ln in README.read_text().splitlines() if ln.startswith(f"yt8m {command} "))
    return shlex.split(line.split("#")[0])[2:]


def test_the_readmes_eval_and_infer_examples_work_for_a_frame_level_model(
    tiny, tmp_path, monkeypatch, caplog
):
    """Flags from the checkpoint: the README's commands give no data flag (the model is
    frame-level, 10 classes); they run, with no warning about defaults nobody typed."""
    (tmp_path / "data").symlink_to(Path(tiny.validate).parent)  # data/validate*, data/test*
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "netvlad").symlink_to(tiny.train_dir)
    monkeypatch.chdir(tmp_path)
    eval_argv = readme_command("eval")
    infer_argv = readme_command("infer")
    assert not any(
        a.startswith(("--frame_features", "--feature", "--num_classes")) for a in eval_argv
    )
    quick = ["--num_readers=0", "--noprogress"]
    with caplog.at_level(logging.WARNING):
        assert run_command("eval", [*eval_argv, *quick]) == 0
        assert run_command("infer", [*infer_argv, *quick]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    (result,) = (tmp_path / "runs" / "netvlad" / "eval").glob("eval-3.json")
    assert json.loads(result.read_text())["num_videos"] == 17
    lines = gzip.decompress(Path("test-netvlad.csv.gz").read_bytes()).decode().splitlines()
    assert len(lines) == 1 + 13 and all(len(ln.split(",")[1].split()) == 20 for ln in lines[1:])


def test_only_typed_model_flags_that_differ_are_warned(tiny, tmp_path, caplog):
    output = tmp_path / "sub.csv"
    argv = tiny.args(f"--input_data_pattern={tiny.test}", f"--output_file={output}")
    with caplog.at_level(logging.WARNING):
        assert run_command("infer", [*argv, "--netvlad_cluster_size=64"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "--netvlad_cluster_size=64" in warned[0], warned


def test_an_exported_model_gives_its_data_format_too(tiny, tmp_path, caplog):
    """Flags from the checkpoint for a `yt8m export` file: the README's eval command (no
    data flag) reads the frame-level inputs the exported model was trained on."""
    exported = tmp_path / "model.safetensors"
    assert run_command("export", [f"--train_dir={tiny.train_dir}", f"--output={exported}"]) == 0
    argv = [f"--train_dir={exported}", f"--eval_data_pattern={tiny.validate}", "--run_once"]
    with caplog.at_level(logging.WARNING):
        assert run_command("eval", [*argv, "--num_readers=0", "--noprogress"]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    (result,) = (tmp_path / "model-eval").glob("eval-3.json")
    assert json.loads(result.read_text())["num_videos"] == 17


@pytest.fixture
def empty_files(tmp_path) -> str:
    """A zero-length file and a GZIP file of nothing: no record at all."""
    (tmp_path / "test0.tfrecord").write_bytes(b"")
    with gzip.open(tmp_path / "test1.tfrecord", "wb"):
        pass
    return str(tmp_path / "test*.tfrecord")


def test_infer_on_files_without_a_record_is_an_error_and_writes_nothing(
    tiny, tmp_path, empty_files, capsys
):
    """Case 1: `infer` exited 0 with a header-only CSV."""
    output = tmp_path / "out" / "sub.csv"
    argv = tiny.args(f"--input_data_pattern={empty_files}", f"--output_file={output}")
    assert run_command("infer", argv) == 2
    message = capsys.readouterr().err
    assert f"--input_data_pattern={empty_files!r}" in message and "no record" in message
    assert "test0.tfrecord (0 bytes)" in message and "test1.tfrecord" in message
    assert not output.parent.exists()


def test_eval_on_files_without_a_record_is_an_error_and_writes_nothing(
    tiny, tmp_path, empty_files, capsys
):
    train_dir = tmp_path / "train"
    tiny.save(3, train_dir=train_dir)
    argv = tiny.args(f"--train_dir={train_dir}", f"--eval_data_pattern={empty_files}", "--run_once")
    assert run_command("eval", argv) == 2
    message = capsys.readouterr().err
    assert f"--eval_data_pattern={empty_files!r}" in message and "no record" in message
    assert not (train_dir / "eval").exists()


@pytest.mark.parametrize("command", ["eval", "infer"])
def test_a_damaged_checkpoint_names_check_point_as_the_way_to_another(
    tiny, tmp_path, command, capsys
):
    """Case 7: a flipped byte inside a weight; eval and infer refuse it and say which other
    steps there are."""
    train_dir = tmp_path / "train"
    for step in (1, 2):
        tiny.save(step, train_dir=train_dir)
    latest = train_dir / "model.ckpt-2.pt"
    flip_byte_inside(latest, load_checkpoint(latest).model_state["classifier.expert_weights"])
    output = tmp_path / "sub.csv"
    pattern = "--eval_data_pattern" if command == "eval" else "--input_data_pattern"
    argv = tiny.args(
        f"--train_dir={train_dir}", f"{pattern}={tiny.validate}", f"--output_file={output}"
    )
    assert run_command(command, [*argv, "--run_once"]) == 2
    message = capsys.readouterr().err
    assert "model.ckpt-2.pt is damaged" in message
    assert "--check_point=STEP (steps present: 1)" in message
    assert not output.exists() and not (train_dir / "eval").exists()
    assert run_command(command, [*argv, "--run_once", "--check_point=1"]) == 0
