"""`--ema_decay`: the moving average of the weights (successors.md §3, miha-skalic's EMA):
its update rule, its place in checkpoints, exact resumption, and eval/infer using it."""

import pytest
import torch

from tests.test_train import tiny_flags, write_tiny_training_set
from yt8m.checkpoint import list_checkpoints, load_checkpoint, restore_model
from yt8m.ema import WeightAverage
from yt8m.errors import YT8MError
from yt8m.flags import parse_flags
from yt8m.train import train


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    return write_tiny_training_set(tmp_path_factory.mktemp("data"), 40)


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_update_is_the_exponential_average_of_every_floating_tensor():
    """shadow <- d * shadow + (1 - d) * w for parameters and batch-norm statistics; the
    integer step count is copied."""
    model = small_model()
    ema = WeightAverage(model, 0.75)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(5, 3))  # moves the running statistics
        ema.update()
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                expected[name] = 0.75 * expected[name] + 0.25 * value
            else:
                expected[name] = value.clone()
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)
    assert ema.state_dict()["1.num_batches_tracked"] == 3


def test_decay_must_be_between_0_and_1():
    with pytest.raises(YT8MError, match="--ema_decay=1.0"):
        WeightAverage(small_model(), 1.0)


def test_training_keeps_the_average_in_each_checkpoint(pattern, tmp_path):
    train_dir = tmp_path / "run"
    flags = tiny_flags(
        pattern, train_dir, "--ema_decay=0.9", "--max_steps=3", "--export_model_steps=1",
        "--keep_checkpoints=0",
    )  # fmt: skip
    train(flags)
    saved = [load_checkpoint(path) for _, path in list_checkpoints(train_dir)]
    assert [c.step for c in saved] == [1, 2, 3]
    for before, after in zip(saved, saved[1:], strict=False):
        for name, value in after.model_state.items():
            if value.is_floating_point():
                expected = 0.9 * before.ema_state[name] + 0.1 * value
                torch.testing.assert_close(after.ema_state[name], expected)
    assert not torch.equal(saved[-1].ema_state["video_pooling.centers"],
                           saved[-1].model_state["video_pooling.centers"])  # fmt: skip


def test_a_resumed_run_has_the_average_of_one_that_never_stopped(pattern, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny_flags(pattern, whole, "--ema_decay=0.8", "--max_steps=4"))
    train(tiny_flags(pattern, parts, "--ema_decay=0.8", "--max_steps=2"))
    train(tiny_flags(pattern, parts, "--ema_decay=0.8", "--max_steps=4"))
    a = load_checkpoint(list_checkpoints(whole)[-1][1]).ema_state
    b = load_checkpoint(list_checkpoints(parts)[-1][1]).ema_state
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_prediction_uses_the_average_unless_use_ema_is_false(pattern, tmp_path):
    train_dir = tmp_path / "run"
    train(tiny_flags(pattern, train_dir, "--ema_decay=0.5", "--max_steps=2"))
    checkpoint = load_checkpoint(list_checkpoints(train_dir)[-1][1])
    model, _ = restore_model(train_dir, -1, parse_flags([]), "cpu")
    raw, _ = restore_model(train_dir, -1, parse_flags(["--use_ema=False"]), "cpu")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, checkpoint.ema_state[name], rtol=0, atol=0)
        torch.testing.assert_close(raw.state_dict()[name], checkpoint.model_state[name])


def test_without_ema_decay_checkpoints_have_no_average(pattern, tmp_path):
    train(tiny_flags(pattern, tmp_path / "run", "--max_steps=1"))
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1]).ema_state is None


def test_recalibrated_statistics_of_the_average_are_its_own(pattern, tmp_path):
    """--recalibrate_batch_norm re-estimates the statistics of the raw weights and, for the
    average, of the averaged weights (not a copy of the raw ones)."""
    train_dir = tmp_path / "run"
    flags = tiny_flags(pattern, train_dir, "--ema_decay=0.5", "--max_steps=3",
                       "--recalibrate_batch_norm=2")  # fmt: skip
    train(flags)
    checkpoint = load_checkpoint(list_checkpoints(train_dir)[-1][1])
    name = "video_pooling.assignment.after.norm.running_mean"
    assert not torch.equal(checkpoint.ema_state[name], checkpoint.model_state[name])
    assert checkpoint.ema_state[name].abs().sum() > 0
