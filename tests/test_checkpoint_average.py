"""`yt8m average-checkpoints` (successors.md §3: linear checkpoint averaging): the mean of
the chosen checkpoints' tensors, batch-norm statistics averaged too, written as a
checkpoint that eval, infer and export accept."""

import pytest
import torch

from tests.test_train import tiny_flags, write_tiny_training_set
from yt8m.checkpoint import list_checkpoints, load_checkpoint, restore_model
from yt8m.checkpoint_average import AveragingError, average_checkpoints, main
from yt8m.cli import main as cli_main
from yt8m.errors import YT8MError
from yt8m.flags import parse_flags
from yt8m.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run with checkpoints at steps 1..4 (and an EMA)."""
    root = tmp_path_factory.mktemp("avg")
    pattern = write_tiny_training_set(root / "data", 40)
    train_dir = root / "run"
    train(
        tiny_flags(
            pattern, train_dir, "--max_steps=4", "--export_model_steps=1",
            "--keep_checkpoints=0", "--ema_decay=0.5",
        )
    )  # fmt: skip
    return train_dir


def test_two_checkpoints_average_to_the_mean_of_their_tensors(run, tmp_path):
    out = tmp_path / "out"
    path = average_checkpoints(run, steps=[2, 4], output_dir=out)
    assert path == out / "model.ckpt-4.pt"
    a, b = (load_checkpoint(run / f"model.ckpt-{s}.pt") for s in (2, 4))
    averaged = load_checkpoint(path)
    assert averaged.training_state["averaged_steps"] == [2, 4]
    assert averaged.optimizer_state is None
    for name, value in averaged.model_state.items():
        if value.is_floating_point():  # weights and batch-norm statistics
            mean = ((a.model_state[name].double() + b.model_state[name].double()) / 2).float()
            torch.testing.assert_close(value, mean, rtol=0, atol=0)
            ema = ((a.ema_state[name].double() + b.ema_state[name].double()) / 2).float()
            torch.testing.assert_close(averaged.ema_state[name], ema, rtol=0, atol=0)
        else:
            assert torch.equal(value, b.model_state[name])
    name = "video_pooling.assignment.after.norm.running_var"
    assert not torch.equal(averaged.model_state[name], b.model_state[name])


def test_last_n_and_the_command_line(run, tmp_path, capsys):
    assert main([str(run), "--last=3", f"--output_dir={tmp_path / 'last'}"]) == 0
    assert f"wrote {tmp_path / 'last' / 'model.ckpt-4.pt'}" in capsys.readouterr().out
    averaged = load_checkpoint(tmp_path / "last" / "model.ckpt-4.pt")
    assert averaged.training_state["averaged_steps"] == [2, 3, 4]
    assert cli_main(["average-checkpoints", str(run), "--steps=1,2"]) == 0
    assert [s for s, _ in list_checkpoints(run / "averaged")] == [2]


def test_the_average_is_a_checkpoint_eval_and_infer_accept(run, tmp_path):
    out = tmp_path / "out"
    average_checkpoints(run, last=2, output_dir=out)
    model, checkpoint = restore_model(out, -1, parse_flags([]), "cpu")
    assert checkpoint.step == 4 and checkpoint.flags.model == "NetVLADModelLF"
    raw, _ = restore_model(out, -1, parse_flags(["--use_ema=False"]), "cpu")
    assert not torch.equal(model.state_dict()["video_pooling.centers"],
                           raw.state_dict()["video_pooling.centers"])  # fmt: skip


def test_bad_choices_are_clear_errors(run, tmp_path):
    with pytest.raises(YT8MError, match="has no checkpoint of step 7.*1, 2, 3, 4"):
        average_checkpoints(run, steps=[2, 7])
    with pytest.raises(AveragingError, match="--last=9.*4 checkpoints"):
        average_checkpoints(run, last=9)
    with pytest.raises(YT8MError, match="no checkpoint"):
        average_checkpoints(tmp_path, last=1)


def test_checkpoints_of_different_models_are_not_averaged(run, tmp_path):
    pattern = write_tiny_training_set(tmp_path / "data", 10)
    other = tmp_path / "other"
    train(tiny_flags(pattern, other, "--max_steps=1", "--netvlad_hidden_size=6"))
    (other / "model.ckpt-2.pt").write_bytes((run / "model.ckpt-2.pt").read_bytes())
    with pytest.raises(AveragingError, match="different models.*--netvlad_hidden_size"):
        average_checkpoints(other, steps=[1, 2])


def test_an_output_dir_that_is_the_train_dir_is_refused_and_changes_nothing(run, capsys):
    """Issue 11 (nothing lost): the average takes the newest step's name, so written into
    the run's own train_dir it replaced that training checkpoint (its optimizer state gone,
    and `train` would resume from the average)."""
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    for spelling in (str(run), str(run / "." / "")):
        assert (
            cli_main(["average-checkpoints", str(run), "--last=2", f"--output_dir={spelling}"]) == 2
        )
        error = capsys.readouterr().err
        assert "--output_dir" in error and "is the train_dir" in error
        assert "would replace model.ckpt-4.pt" in error and len(error.strip().splitlines()) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


def test_replacing_an_earlier_average_is_said(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(run), "--last=3", f"--output_dir={out}"]) == 0
    assert "replacing the existing" not in capsys.readouterr().err
    assert main([str(run), "--steps=2,4", f"--output_dir={out}"]) == 0
    printed = capsys.readouterr().err
    assert f"replacing the existing {out / 'model.ckpt-4.pt'}" in printed
    assert load_checkpoint(out / "model.ckpt-4.pt").training_state["averaged_steps"] == [2, 4]
