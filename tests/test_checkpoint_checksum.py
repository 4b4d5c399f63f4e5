"""Checkpoint checksums (issue 11 case 7): a damaged checkpoint is never used silently
(as TFRecords carry a CRC32C per record, fidelity.md §1, checkpoints carry one per tensor)."""

import pytest
import torch

from yt8m.checkpoint import CheckpointError, load_checkpoint, restore_model, save_checkpoint
from yt8m.flags import parse_flags
from yt8m.models.registry import build_model


def _tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def flip_byte_inside(path, tensor: torch.Tensor) -> None:
    """Flip one bit in the middle of `tensor`'s bytes where the file stores them."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0 and bytes(data).count(raw) == 1
    data[at + len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def test_a_flipped_byte_inside_a_weight_is_detected_on_load(tmp_path):
    """Issue 11 case 7: torch.load reads a damaged weight silently; the checksum does not."""
    torch.manual_seed(1)
    model = torch.nn.Linear(32, 16)
    path = save_checkpoint(tmp_path, 5, model, parse_flags([]))
    assert torch.equal(load_checkpoint(path).model_state["weight"], model.weight)
    flip_byte_inside(path, model.weight)
    assert not torch.equal(
        torch.load(path, weights_only=True)["model"]["weight"], model.weight
    )  # torch itself loads the damaged value
    with pytest.raises(
        CheckpointError, match=r"model.ckpt-5.pt is damaged: its entry model/weight"
    ):
        load_checkpoint(path)


def test_a_changed_flag_table_is_detected_too(tmp_path):
    """The flag table (JSON) rebuilds the model: a digit changed in it is damage as well."""
    flags = parse_flags(["--netvlad_cluster_size=64"])
    path = save_checkpoint(tmp_path, 1, _tiny_module(), flags)
    data = path.read_bytes()
    assert data.count(b'"netvlad_cluster_size": 64') == 1
    path.write_bytes(data.replace(b'"netvlad_cluster_size": 64', b'"netvlad_cluster_size": 65'))
    with pytest.raises(CheckpointError, match="damaged: its entry flags"):
        load_checkpoint(path)


def test_restoring_a_damaged_checkpoint_names_check_point_and_the_other_steps(tmp_path):
    """eval/infer on a bad checkpoint: the error says how to pick another (issue 11 case 7)."""
    flags = parse_flags(["--model=LogisticModel", "--num_classes=3", "--feature_sizes=4,2"])
    model = build_model(flags)
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, model, flags)
    flip_byte_inside(tmp_path / "model.ckpt-30.pt", model.state_dict()["classifier.weight"])
    with pytest.raises(CheckpointError) as err:
        restore_model(tmp_path, -1, flags, "cpu")
    message = str(err.value)
    assert "model.ckpt-30.pt is damaged" in message
    assert "--check_point=STEP (steps present: 10, 20)" in message
    restored, checkpoint = restore_model(tmp_path, 20, flags, "cpu")
    assert checkpoint.step == 20


def test_the_ema_of_the_weights_is_covered_by_the_checksums(tmp_path):
    """A checkpoint's EMA (``--ema_decay``) is what eval/infer use: damage to it is found."""
    model = _tiny_module()
    ema = {name: t.clone() + 0.5 for name, t in model.state_dict().items()}
    path = save_checkpoint(tmp_path, 7, model, parse_flags([]), ema_state=ema)
    assert torch.equal(load_checkpoint(path).ema_state["0.weight"], ema["0.weight"])
    flip_byte_inside(path, ema["0.weight"])
    with pytest.raises(CheckpointError, match=r"damaged: its entry ema/0.weight"):
        load_checkpoint(path)


def test_averaged_checkpoints_carry_checksums_that_verify(tmp_path):
    """`yt8m average-checkpoints` writes through save_checkpoint: its output is checked on
    load like any other checkpoint."""
    from yt8m.checkpoint_average import average_checkpoints

    flags = parse_flags(["--model=LogisticModel", "--num_classes=3", "--feature_sizes=4,2"])
    for step in (10, 20):
        torch.manual_seed(step)
        save_checkpoint(tmp_path / "run", step, build_model(flags), flags)
    path = average_checkpoints(tmp_path / "run", last=2)
    payload = torch.load(path, weights_only=True)
    assert "model/classifier.weight" in payload["checksums"]
    averaged = load_checkpoint(path).model_state["classifier.weight"]
    flip_byte_inside(path, averaged)
    with pytest.raises(CheckpointError, match=r"damaged: its entry model/classifier.weight"):
        load_checkpoint(path)
