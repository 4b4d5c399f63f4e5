"""Label losses of the original (`--label_loss`), each a callable on a batch.

``loss(predictions [B, C] probabilities, labels [B, C] multi-hot) -> scalar``:
a per-video sum over the classes, averaged over the batch (fidelity.md §5).

* ``CrossEntropyLoss`` (WILLOW's, the default): ``-2 * [alpha * y * log(p + 1e-5)
  + (1 - alpha) * (1 - y) * log(1 - p + 1e-5)]`` with ``alpha`` = 0.5.
* ``HingeLoss`` (starter code): ``max(1 - s * p, 0)`` with ``s = 2y - 1``.
* ``SoftmaxLoss`` (starter code): cross entropy between ``softmax(p)`` over the
  classes and the labels scaled to sum to one per video.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from yt8m.errors import YT8MError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LossError(YT8MError, ValueError):
    """An unknown `--label_loss`."""


def cross_entropy_loss(
    predictions: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """WILLOW's weighted binary cross entropy; `predictions` are probabilities."""
    epsilon = 1e-5
    y = labels.to(predictions.dtype)
    per_class = alpha * y * torch.log(predictions + epsilon) + (1 - alpha) * (1 - y) * torch.log(
        1 - predictions + epsilon
    )
    return (-2.0 * per_class).sum(dim=1).mean()


def hinge_loss(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The starter code's hinge loss with margin 1 on signed labels."""
    sign = 2.0 * labels.to(predictions.dtype) - 1.0
    return torch.relu(1.0 - sign * predictions).sum(dim=1).mean()


def softmax_loss(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The starter code's softmax loss; a video without labels contributes 0."""
    y = labels.to(predictions.dtype)
    target = y / y.sum(dim=1, keepdim=True).clamp_min(1e-7)
    return -(target * torch.log_softmax(predictions, dim=1)).sum(dim=1).mean()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "CrossEntropyLoss": cross_entropy_loss,
    "HingeLoss": hinge_loss,
    "SoftmaxLoss": softmax_loss,
}


def get_loss(name: str, alpha: float = 0.5) -> LossFn:
    """The loss named by `--label_loss`; `alpha` weights CrossEntropyLoss's positive term."""
    if name not in LOSSES:
        close = difflib.get_close_matches(name, list(LOSSES), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise LossError(
            f"--label_loss={name!r} is not a known loss; {hint}choose one of {', '.join(LOSSES)}"
        )
    if name == "CrossEntropyLoss":
        return lambda predictions, labels: cross_entropy_loss(predictions, labels, alpha)
    return LOSSES[name]
