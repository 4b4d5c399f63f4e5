"""Checkpoints: atomic files, the flag table inside, safe loading, clear errors (design.md)."""

import json

import pytest
import torch

from yt8m.checkpoint import (
    CheckpointError,
    find_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from yt8m.flags import parse_flags


def _tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_round_trip_keeps_weights_optimizer_flags_and_training_state(tmp_path):
    model = _tiny_module()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    flags = parse_flags(["--model=NetVLADModelLF", "--netvlad_cluster_size=8", "--max_step=7"])
    state = {"batches": 7, "torch_rng": torch.get_rng_state()}
    path = save_checkpoint(tmp_path, 7, model, flags, optimizer, state)

    assert path == tmp_path / "model.ckpt-7.pt"
    loaded = load_checkpoint(path)
    assert loaded.step == 7
    assert loaded.flags == flags
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model_state[name], value)
    assert loaded.training_state["batches"] == 7
    assert torch.equal(loaded.training_state["torch_rng"], state["torch_rng"])
    fresh = torch.optim.Adam(_tiny_module().parameters(), lr=0.1)
    fresh.load_state_dict(loaded.optimizer_state)
    assert torch.equal(
        fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_pointer_listing_by_step_and_rotation(tmp_path):
    model, flags = _tiny_module(), parse_flags([])
    for step in (9, 10, 11, 100):
        save_checkpoint(tmp_path, step, model, flags, keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [
        10,
        11,
        100,
    ]  # numeric order, 9 rotated out
    assert latest_checkpoint(tmp_path) == tmp_path / "model.ckpt-100.pt"
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    assert pointer["latest"] == "model.ckpt-100.pt" and pointer["step"] == 100
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    model, flags = _tiny_module(), parse_flags([])
    for step in range(1, 8):
        save_checkpoint(tmp_path, step, model, flags, keep=0)
    assert len(list_checkpoints(tmp_path)) == 7


def test_remove_checkpoints_clears_checkpoints_pointer_and_temporaries(tmp_path):
    save_checkpoint(tmp_path, 1, _tiny_module(), parse_flags([]))
    (tmp_path / ".model.ckpt-2.pt.tmp-123").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")
    remove_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_executes_code_from_the_file(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "model.ckpt-1.pt"
    torch.save({"format": 1, "payload": _RunsCode(marker)}, path)  # pickles the object
    with pytest.raises(CheckpointError, match="model.ckpt-1.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_damaged_or_foreign_files_are_errors_naming_the_file(tmp_path):
    damaged = tmp_path / "model.ckpt-2.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="model.ckpt-2.pt cannot be read"):
        load_checkpoint(damaged)
    foreign = tmp_path / "model.ckpt-3.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="model.ckpt-3.pt is not a yt8m checkpoint"):
        load_checkpoint(foreign)


def test_missing_train_dir_names_the_close_match(tmp_path):
    # The seed's LSTM inference names `lstm-0002-val-150-random`; training wrote `...-2`.
    (tmp_path / "lstm-0002-val-150-random-2").mkdir()
    (tmp_path / "GRU-0002-1200").mkdir()
    with pytest.raises(CheckpointError) as err:
        find_checkpoint(tmp_path / "lstm-0002-val-150-random")
    message = str(err.value)
    assert "lstm-0002-val-150-random' does not exist" in message
    assert "did you mean" in message and "lstm-0002-val-150-random-2" in message
    assert "GRU" not in message


def test_train_dir_without_checkpoint_says_what_it_holds(tmp_path):
    (tmp_path / "events.out.tfevents.1").write_text("")
    with pytest.raises(CheckpointError, match=r"no checkpoint .* it holds: events.out.tfevents.1"):
        find_checkpoint(tmp_path)


def test_missing_step_lists_the_steps_present(tmp_path):
    model, flags = _tiny_module(), parse_flags([])
    for step in (2, 4):
        save_checkpoint(tmp_path, step, model, flags)
    assert find_checkpoint(tmp_path, 2) == tmp_path / "model.ckpt-2.pt"
    assert find_checkpoint(tmp_path, -1) == tmp_path / "model.ckpt-4.pt"
    with pytest.raises(CheckpointError, match="no checkpoint of step 3 .* it has steps 2, 4"):
        find_checkpoint(tmp_path, 3)
