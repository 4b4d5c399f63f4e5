"""`yt8m eval`: metrics of checkpoints over a whole split (fidelity.md §6).

The numbers written (stdout, JSON, TensorBoard) must be those of `EvaluationMetrics`
fed, here, with the predictions of the checkpoint's model; watch mode evaluates every
new checkpoint once; two processes give the numbers of one.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_inference import TinySetup, run_torchrun
from yt8m import evaluate
from yt8m.checkpoint import CheckpointError, restore_model
from yt8m.data.loader import make_loader
from yt8m.data.tfrecord import RecordError
from yt8m.flags import parse_flags
from yt8m.inference import PredictionError
from yt8m.losses import cross_entropy_loss
from yt8m.metrics import EvaluationMetrics

METRIC_NAMES = ("hit_at_one", "perr", "gap", "map", "map_positive_classes", "avg_loss")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinySetup:
    return TinySetup(tmp_path_factory.mktemp("tiny"))


def expected_metrics(tiny: TinySetup, train_dir, top_k: int) -> dict[str, float]:
    """EvaluationMetrics fed here with the checkpoint model's deterministic predictions."""
    flags = parse_flags(tiny.args(f"--train_dir={train_dir}"), "eval")
    model, _ = restore_model(train_dir, -1, flags, "cpu")
    model.deterministic_sampling = True
    metrics = EvaluationMetrics(flags.num_classes, top_k)
    with torch.no_grad():
        for batch in make_loader(flags, tiny.validate, training=False):
            num_frames = batch["num_frames"]
            probabilities = model(batch["inputs"], num_frames)
            metrics.accumulate(
                probabilities, batch["labels"], cross_entropy_loss(probabilities, batch["labels"])
            )
    return metrics.get()


def eval_args(tiny: TinySetup, train_dir, *extra: str) -> list[str]:
    return tiny.args(
        f"--train_dir={train_dir}",
        f"--eval_data_pattern={tiny.validate}",
        "--deterministic_sampling",
        *extra,
    )


def test_run_once_reports_the_numbers_of_evaluation_metrics(tiny, tmp_path, capsys):
    """stdout, eval-STEP.json and TensorBoard carry the split's Hit@1, PERR, GAP, both mAPs
    and the loss, equal to EvaluationMetrics on the same predictions (fidelity.md §6)."""
    train_dir = tmp_path / "train"
    tiny.save(step=7, train_dir=train_dir)
    assert evaluate.main(eval_args(tiny, train_dir, "--run_once", "--top_k=4")) == 0
    expected = expected_metrics(tiny, train_dir, top_k=4)

    saved = json.loads((train_dir / "eval" / "eval-7.json").read_text())
    assert saved["step"] == 7 and saved["num_videos"] == expected["num_videos"] == 17
    assert saved["checkpoint"].endswith("model.ckpt-7.pt")
    for name in METRIC_NAMES:
        assert saved[name] == pytest.approx(expected[name], rel=1e-9), name

    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("eval step 7:"))
    printed = dict(re.findall(r"(\w+)=(\S+)", line))
    for name in METRIC_NAMES:
        assert float(printed[name]) == pytest.approx(expected[name], abs=1e-6), name

    events = EventAccumulator(str(train_dir / "eval"))
    events.Reload()
    for name in METRIC_NAMES:
        (scalar,) = events.Scalars(f"eval/{name}")
        assert scalar.step == 7
        assert scalar.value == pytest.approx(expected[name], rel=1e-6), name


def test_check_point_selects_a_step(tiny, tmp_path):
    train_dir = tmp_path / "train"
    tiny.save(step=2, seed=1, train_dir=train_dir)
    tiny.save(step=5, seed=2, train_dir=train_dir)
    (result,) = evaluate.evaluate(
        parse_flags(eval_args(tiny, train_dir, "--check_point=2"), "eval")
    )
    assert result["step"] == 2
    assert sorted(p.name for p in (train_dir / "eval").glob("*.json")) == ["eval-2.json"]


def test_watch_mode_evaluates_each_new_checkpoint_once(tiny, tmp_path):
    """Without --run_once eval keeps looking at train_dir and evaluates each new latest
    checkpoint once (the original's loop); here bounded by max_evaluations."""
    train_dir = tmp_path / "watched"
    tiny.save(step=1, train_dir=train_dir)
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # training writes a checkpoint while eval waits
            tiny.save(step=4, seed=1, train_dir=train_dir)

    flags = parse_flags(eval_args(tiny, train_dir, "--eval_poll_secs=0.25"), "eval")
    results = evaluate.evaluate(flags, max_evaluations=2, sleep=sleep)
    assert [r["step"] for r in results] == [1, 4]
    assert sleeps == [0.25, 0.25]  # step 1 was seen twice more, and not evaluated again
    assert sorted(p.name for p in (train_dir / "eval").glob("*.json")) == [
        "eval-1.json",
        "eval-4.json",
    ]
    assert results[0]["gap"] != results[1]["gap"]  # two different models were evaluated


def test_watch_mode_waits_for_a_first_checkpoint(tiny, tmp_path):
    train_dir = tmp_path / "not-yet"

    def sleep(seconds: float) -> None:
        tiny.save(step=9, train_dir=train_dir)

    flags = parse_flags(eval_args(tiny, train_dir), "eval")
    assert [r["step"] for r in evaluate.evaluate(flags, max_evaluations=1, sleep=sleep)] == [9]


def test_clear_errors_for_missing_data_or_checkpoint(tiny, tmp_path):
    with pytest.raises(PredictionError, match="--eval_data_pattern is empty"):
        evaluate.main(tiny.args("--run_once"))
    with pytest.raises(RecordError, match="no files match"):
        evaluate.main(tiny.args("--run_once", f"--eval_data_pattern={tmp_path}/none*.tfrecord"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint .* in train_dir"):
        evaluate.main(eval_args(tiny, empty, "--run_once"))


def test_two_processes_give_the_numbers_of_one(tiny, tmp_path):
    """Under torchrun each rank evaluates its share; the merged metrics equal one process's."""
    train_dir = tmp_path / "train"
    tiny.save(step=3, train_dir=train_dir)
    (single,) = evaluate.evaluate(parse_flags(eval_args(tiny, train_dir, "--run_once"), "eval"))
    (train_dir / "eval" / "eval-3.json").unlink()
    done = run_torchrun(["eval", *eval_args(tiny, train_dir, "--run_once")])
    assert done.returncode == 0, done.stderr[-3000:]
    merged = json.loads((train_dir / "eval" / "eval-3.json").read_text())
    assert merged["num_videos"] == single["num_videos"] == 17
    for name in METRIC_NAMES:
        assert merged[name] == pytest.approx(single[name], rel=1e-6), name
    assert done.stdout.count("eval step 3:") == 1  # rank 0 alone reports


def test_merged_metrics_equal_one_pass_over_both_shares():
    """The merge used under torchrun: two shares merged give the numbers of one pass."""
    generator = torch.Generator().manual_seed(0)
    predictions = torch.rand(40, 12, generator=generator)
    labels = torch.rand(40, 12, generator=generator) > 0.8
    whole = EvaluationMetrics(12, 5)
    whole.accumulate(predictions, labels, cross_entropy_loss(predictions, labels))
    first, second = EvaluationMetrics(12, 5), EvaluationMetrics(12, 5)
    for part, rows in ((second, slice(25, 40)), (first, slice(0, 25))):
        part.accumulate(
            predictions[rows], labels[rows], cross_entropy_loss(predictions[rows], labels[rows])
        )
    second.merge(first)
    assert second.get() == pytest.approx(whole.get(), rel=1e-6)
