"""The label losses of the original (fidelity.md §5)."""

import math

import pytest
import torch

from yt8m.losses import LossError, get_loss


def _reference_cross_entropy(p: list[list[float]], y: list[list[int]], alpha: float) -> float:
    """fidelity.md §5 written out element by element in float64."""
    rows = []
    for prow, yrow in zip(p, y, strict=True):
        total = 0.0
        for pc, yc in zip(prow, yrow, strict=True):
            total += -2 * (
                alpha * yc * math.log(pc + 1e-5) + (1 - alpha) * (1 - yc) * math.log(1 - pc + 1e-5)
            )
        rows.append(total)
    return sum(rows) / len(rows)


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_cross_entropy_sums_over_classes_and_averages_over_videos(alpha):
    p = [[0.9, 0.2, 0.0], [0.5, 1.0, 0.1]]
    y = [[1, 0, 0], [0, 1, 1]]
    loss = get_loss("CrossEntropyLoss", alpha=alpha)(
        torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.bool)
    )
    assert loss.item() == pytest.approx(_reference_cross_entropy(p, y, alpha), rel=1e-12)


def test_cross_entropy_is_finite_at_probabilities_zero_and_one():
    p = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([[True, False]])
    loss = get_loss("CrossEntropyLoss")(p, y)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-2 * math.log(1e-5), rel=1e-4)


def test_hinge_loss_uses_signed_labels_with_margin_one():
    p = torch.tensor([[0.3, -0.5, 2.0]])
    y = torch.tensor([[1, 0, 1]])
    # 1 - 0.3, 1 - 0.5 (sign -1 times -0.5), max(1 - 2, 0)
    assert get_loss("HingeLoss")(p, y).item() == pytest.approx(0.7 + 0.5 + 0.0)


def test_softmax_loss_spreads_the_target_over_the_labels():
    p = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([[1, 0, 1], [0, 0, 0]])
    log_softmax = torch.log_softmax(p[0], 0)
    expected_first = -(0.5 * log_softmax[0] + 0.5 * log_softmax[2]).item()
    assert get_loss("SoftmaxLoss")(p, y).item() == pytest.approx(expected_first / 2)


def test_unknown_loss_names_the_flag_and_the_closest_loss():
    with pytest.raises(
        LossError, match="--label_loss='CrossEntropyLos'.*did you mean CrossEntropyLoss"
    ):
        get_loss("CrossEntropyLos")
