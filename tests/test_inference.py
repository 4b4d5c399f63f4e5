"""`yt8m infer`: submission files rebuilt from the checkpoint alone (fidelity.md §6).

A tiny NetVLAD checkpoint (saved directly, untrained) predicts a tiny synthetic
dataset in the real format (1024 + 128 uint8 features per frame, as the seed's
commands say). `tiny_setup` and `run_torchrun` are shared with test_evaluate.py.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.seed import flag_value, inference_commands, training_commands
from yt8m import inference
from yt8m.checkpoint import CheckpointError, restore_model, save_checkpoint
from yt8m.cli import run_command
from yt8m.data.loader import make_loader
from yt8m.data.synthetic import write_dataset
from yt8m.data.tfrecord import RecordError
from yt8m.distributed import init_distributed, shutdown
from yt8m.flags import parse_flags
from yt8m.inference import PredictionError
from yt8m.models.registry import build_model
from yt8m.submission import SUBMISSION_HEADER, format_submission_lines, read_submission

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
# The checkpoint's model: what the seed's commands would train, at toy size.
MODEL_ARGS = [
    "--model=NetVLADModelLF",
    "--netvlad_cluster_size=4",
    "--netvlad_hidden_size=8",
    "--iterations=6",
    "--netvlad_relu=False",
    "--gating=True",
]
# The data flags of the seed's commands, plus this dataset's vocabulary.
DATA_ARGS = [
    "--frame_features=True",
    "--feature_names=rgb,audio",
    "--feature_sizes=1024,128",
    f"--num_classes={NUM_CLASSES}",
]
RUN_ARGS = ["--num_readers=0", "--noprogress", "--device=cpu", "--batch_size=5", "--max_frames=12"]


class TinySetup:
    """A dataset (validate split with labels, test split without) and a train_dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        patterns = write_dataset(
            root / "data",
            videos={"validate": 17, "test": 13},
            shards=3,
            classes=NUM_CLASSES,
            frames=(1, 12),
            levels=("frame",),
        )
        self.validate = patterns["frame"]["validate"]
        self.test = patterns["frame"]["test"]
        self.train_dir = root / "train"
        self.flags = parse_flags(MODEL_ARGS + DATA_ARGS + RUN_ARGS, "train")
        self.save(step=3)

    def save(self, step: int, seed: int = 0, train_dir: Path | None = None) -> Path:
        """Save a fresh model (weights drawn with `seed`) as the checkpoint of `step`."""
        torch.manual_seed(seed)
        model = build_model(self.flags)
        with torch.no_grad():  # non-trivial batch-norm statistics
            for name, buffer in model.named_buffers():
                if name.endswith("running_mean"):
                    buffer.normal_(0, 0.1)
        return save_checkpoint(train_dir or self.train_dir, step, model, self.flags)

    def args(self, *extra: str) -> list[str]:
        """A command line for this setup; later flags override earlier ones."""
        return [f"--train_dir={self.train_dir}", *DATA_ARGS, *RUN_ARGS, *extra]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinySetup:
    return TinySetup(tmp_path_factory.mktemp("tiny"))


def run_torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=N -m yt8m ARGS` on Gloo (CPU), output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "yt8m", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def infer(tiny: TinySetup, output: Path, *extra: str) -> list[tuple[str, list, list]]:
    """Run `yt8m infer` in this process; the file's (id, labels, confidences) rows."""
    argv = tiny.args(f"--input_data_pattern={tiny.test}", f"--output_file={output}", *extra)
    assert inference.main(argv) == 0
    return [(vid, labels.tolist(), conf.tolist()) for vid, labels, conf in read_submission(output)]


def expected_lines(tiny: TinySetup, pattern: str, top_k: int) -> set[str]:
    """Submission lines computed here: checkpoint -> loader -> model."""
    flags = parse_flags(tiny.args("--deterministic_sampling"), "infer")
    model, _ = restore_model(tiny.train_dir, -1, flags, "cpu")
    model.deterministic_sampling = True
    lines = set()
    with torch.no_grad():
        for batch in make_loader(flags, pattern, training=False):
            probabilities = model(batch["inputs"], batch["num_frames"])
            lines.update(
                format_submission_lines(batch["video_ids"], probabilities, top_k).splitlines()
            )
    return lines


def test_one_line_per_video_top_k_pairs_highest_first(tiny, tmp_path):
    """fidelity.md §6: header, then `id,` and top_k `label confidence` pairs, highest first."""
    output = tmp_path / "sub.csv"
    rows = infer(tiny, output, "--top_k=7", "--deterministic_sampling")
    text = output.read_text()
    assert text.splitlines()[0] == SUBMISSION_HEADER
    ids = [vid for vid, _, _ in rows]
    assert len(ids) == 13 and len(set(ids)) == 13
    for _, labels, confidences in rows:
        assert len(labels) == 7 and len(set(labels)) == 7
        assert all(0 <= label < NUM_CLASSES for label in labels)
        assert confidences == sorted(confidences, reverse=True)
    assert set(text.splitlines()[1:]) == expected_lines(tiny, tiny.test, top_k=7)


def test_gzip_output_when_the_name_ends_in_gz(tiny, tmp_path):
    plain = infer(tiny, tmp_path / "sub.csv", "--deterministic_sampling")
    packed = tmp_path / "sub.csv.gz"
    assert infer(tiny, packed, "--deterministic_sampling") == plain
    assert gzip.decompress(packed.read_bytes()) == (tmp_path / "sub.csv").read_bytes()


def test_default_sampling_is_random_but_seedable(tiny, tmp_path):
    """fidelity.md §3: frames are drawn at inference too; --seed makes a run repeatable."""
    first = infer(tiny, tmp_path / "a.csv", "--seed=1")
    assert infer(tiny, tmp_path / "b.csv", "--seed=1") == first
    assert infer(tiny, tmp_path / "c.csv", "--seed=2") != first


def test_a_crash_mid_write_leaves_nothing_at_the_output_path(tiny, tmp_path, monkeypatch):
    batches = []

    def crash_on_second_batch(video_ids, probabilities, top_k):
        batches.append(video_ids)
        if len(batches) == 2:
            raise RuntimeError("killed mid-write")
        return format_submission_lines(video_ids, probabilities, top_k)

    monkeypatch.setattr(inference, "format_submission_lines", crash_on_second_batch)
    output = tmp_path / "out" / "sub.csv.gz"
    with pytest.raises(RuntimeError, match="killed mid-write"):
        infer(tiny, output)
    assert len(batches) == 2  # one batch was already written when it crashed
    assert list(output.parent.iterdir()) == []


def test_model_flags_come_from_the_checkpoint_and_differences_are_warned(tiny, tmp_path, caplog):
    """fidelity.md §6: the seed's Gated DBoF inference names --moe_prob_gating, which its
    training lacked; the model stays the checkpoint's, each difference is named."""
    reference = infer(tiny, tmp_path / "ref.csv", "--deterministic_sampling")
    conflicting = ["--netvlad_cluster_size=64", "--moe_prob_gating=True", "--iterations=300"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rows = infer(
            tiny, tmp_path / "sub.csv", "--deterministic_sampling", *MODEL_ARGS, *conflicting
        )
    assert rows == reference
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for flag in ("--netvlad_cluster_size=64", "--moe_prob_gating=True", "--iterations=300"):
        assert flag in warned
    assert "--netvlad_hidden_size" not in warned  # equal values are not reported


def test_the_seeds_inference_commands_are_accepted_as_written(tiny, tmp_path):
    """Every flag of the seed's seven inference commands parses (training-only ones too);
    only the paths are replaced, and the model is the checkpoint's."""
    for number, argv in enumerate(inference_commands()):
        output = tmp_path / f"seed-{number}.csv"
        paths = {
            "train_dir": str(tiny.train_dir),
            "input_data_pattern": tiny.test,
            "output_file": str(output),
        }
        replaced = [a for a in argv if a.lstrip("-").split("=")[0] not in paths]
        extra = [f"--{name}={value}" for name, value in paths.items()]
        extra += [f"--num_classes={NUM_CLASSES}", "--noprogress", "--num_readers=0"]
        assert inference.main(replaced + extra) == 0
        rows = list(read_submission(output))
        assert len(rows) == 13
        assert all(len(labels) == NUM_CLASSES for _, labels, _ in rows)  # top_k 50 > vocabulary


def test_an_empty_glob_is_a_clear_error(tiny, tmp_path, capsys):
    output = tmp_path / "sub.csv"
    pattern = str(tmp_path / "nothing" / "test*.tfrecord")
    infer_argv = tiny.args(f"--input_data_pattern={pattern}", f"--output_file={output}")
    with pytest.raises(RecordError, match="nothing/test"):
        inference.main(infer_argv)
    assert run_command("infer", infer_argv) == 2
    assert "no files match the data pattern" in capsys.readouterr().err
    assert not output.exists()


def test_missing_output_file_or_pattern_is_a_clear_error(tiny):
    with pytest.raises(PredictionError, match="--output_file is empty"):
        inference.main(tiny.args(f"--input_data_pattern={tiny.test}"))
    with pytest.raises(PredictionError, match="--input_data_pattern is empty"):
        inference.main(tiny.args("--output_file=x.csv"))


def test_a_train_dir_without_checkpoint_is_a_clear_error(tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [f"--input_data_pattern={tiny.test}", f"--output_file={tmp_path / 's.csv'}"]
    with pytest.raises(CheckpointError, match="no checkpoint .* in train_dir"):
        inference.main(tiny.args(*argv, f"--train_dir={empty}"))
    assert not (tmp_path / "s.csv").exists()


def test_the_seeds_unbridged_train_dir_names_the_close_match(tiny, tmp_path):
    """fidelity.md §6: the Gated DBoF inference names `...-300iter-gatedmoe`, training wrote
    `...-300iter`: the error names what is missing and the directory that exists."""
    trained = next(
        flag_value(c, "train_dir") for c in training_commands() if "gateddbof" in " ".join(c)
    )
    asked = next(
        flag_value(c, "train_dir") for c in inference_commands() if "gateddbof" in " ".join(c)
    )
    assert trained != asked
    (tmp_path / trained).mkdir()
    argv = [f"--input_data_pattern={tiny.test}", f"--output_file={tmp_path / 's.csv'}"]
    with pytest.raises(CheckpointError) as error:
        inference.main(tiny.args(*argv, f"--train_dir={tmp_path / asked}"))
    assert f"{asked!r} does not exist" in str(error.value).replace(str(tmp_path) + "/", "")
    assert trained in str(error.value)


def test_data_flags_that_differ_from_the_checkpoint_are_warned_and_the_checkpoints_used(
    tiny, tmp_path, caplog
):
    """Issue 11: the data format is the checkpoint's, like the model; each given flag that
    differs is named once (video-level flags against a frame-level checkpoint included),
    defaults nobody typed are not."""
    reference = infer(tiny, tmp_path / "ref.csv", "--deterministic_sampling")
    typed = ["--feature_sizes=1024,64", "--frame_features=False", "--num_classes=7"]
    with caplog.at_level(logging.WARNING):
        rows = infer(tiny, tmp_path / "sub.csv", "--deterministic_sampling", *typed)
    assert rows == reference
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3, warned
    for flag, saved in (("feature_sizes=1024,64", "1024,128"), ("frame_features=False", "True"),
                        ("num_classes=7", str(NUM_CLASSES))):  # fmt: skip
        (line,) = [w for w in warned if w.startswith(f"--{flag} ")]
        assert f"differs from {saved}" in line and "the checkpoint's value is used" in line


def test_every_record_exactly_once_under_two_processes(tiny, tmp_path):
    """Two Gloo processes write one merged file: each video once, the same lines as one process."""
    single = tmp_path / "single.csv"
    infer(tiny, single, "--deterministic_sampling", "--top_k=5")
    merged = tmp_path / "merged.csv.gz"
    argv = tiny.args(f"--input_data_pattern={tiny.test}", f"--output_file={merged}")
    done = run_torchrun(["infer", *argv, "--deterministic_sampling", "--top_k=5"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = gzip.decompress(merged.read_bytes()).decode().splitlines()
    assert lines[0] == SUBMISSION_HEADER
    ids = [line.split(",")[0] for line in lines[1:]]
    assert len(ids) == len(set(ids)) == 13
    # Batches of other sizes round the last printed digit differently (the matrix
    # products block differently): same labels, confidences within a unit of %f's last place.
    expected = {vid: (labels, conf) for vid, labels, conf in read_submission(single)}
    assert set(expected) == set(ids)
    for vid, labels, conf in read_submission(merged):
        assert labels.tolist() == expected[vid][0].tolist(), vid
        assert abs(conf - expected[vid][1]).max() <= 1.5e-6, vid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.csv.gz", "single.csv"]


def test_batch_norm_statistics_of_the_batch_predict_as_the_training_graph(tiny, tmp_path):
    """docs/fidelity.md §6.3: `--batch_norm_statistics=batch` gives the predictions of the
    model in training mode over the same frames (the original's inference restored its
    training graph), and leaves the moving averages as the checkpoint has them."""
    flags = parse_flags(tiny.args("--seed=3", "--batch_norm_statistics=batch"), "infer")
    moving_flags = parse_flags(tiny.args("--seed=3"), "infer")
    process = init_distributed("cpu")
    try:
        model, checkpoint, data_flags = inference.restore_for_prediction(flags, -1, process)

        def predictions(model, flags):
            loader = make_loader(data_flags, tiny.test, training=False)
            return [p for _, p in inference.predict(model, loader, flags, process, "test")]

        got = predictions(model, flags)
        for key, value in model.state_dict().items():
            assert torch.equal(value, checkpoint.model_state[key]), key
        moving = predictions(model, moving_flags)
        training_graph = predictions(model.train(), moving_flags)
    finally:
        shutdown(process)
    assert len(got) == len(training_graph) > 1
    for a, b, c in zip(got, training_graph, moving, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(a, c, rtol=1e-3, atol=1e-4)
    rows = infer(tiny, tmp_path / "sub.csv", "--seed=3", "--batch_norm_statistics=batch")
    assert rows != infer(tiny, tmp_path / "moving.csv", "--seed=3")
