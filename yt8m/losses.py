"""Label losses of the original (`--label_loss`), each a callable on a batch.

``loss(predictions [B, C] probabilities, labels [B, C] multi-hot, label_weights=None)
-> scalar``: a per-video sum over the classes, averaged over the batch (fidelity.md §5).
``label_weights`` (float ``[B, C]``, any device; the 2019 rated segments, successors.md §2)
weights each class's term, so that weight 0 leaves a class out (the starter's
``label_weights``, which it applied to CrossEntropyLoss; here every loss takes them).

* ``CrossEntropyLoss`` (WILLOW's, the default): ``-2 * [alpha * y * log(p + 1e-5)
  + (1 - alpha) * (1 - y) * log(1 - p + 1e-5)]`` with ``alpha`` = 0.5.
* ``HingeLoss`` (starter code): ``max(1 - s * p, 0)`` with ``s = 2y - 1``.
* ``SoftmaxLoss`` (starter code): cross entropy between ``softmax(p)`` over the
  classes and the labels scaled to sum to one per video; with weights, the softmax runs
  over the classes of weight > 0 and the labels are scaled by the weights.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from yt8m.errors import YT8MError

LossFn = Callable[..., torch.Tensor]  # (predictions, labels, label_weights=None) -> scalar


class LossError(YT8MError, ValueError):
    """An unknown `--label_loss`."""


def _weighted(per_class: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
    """The per-video loss: `per_class` ``[B, C]`` weighted (if given) and summed."""
    if label_weights is not None:
        per_class = per_class * label_weights.to(per_class.device, per_class.dtype)
    return per_class.sum(dim=1)


def cross_entropy_loss(
    predictions: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    label_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """WILLOW's weighted binary cross entropy; `predictions` are probabilities."""
    epsilon = 1e-5
    y = labels.to(predictions.dtype)
    per_class = alpha * y * torch.log(predictions + epsilon) + (1 - alpha) * (1 - y) * torch.log(
        1 - predictions + epsilon
    )
    return _weighted(-2.0 * per_class, label_weights).mean()


def hinge_loss(
    predictions: torch.Tensor, labels: torch.Tensor, label_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The starter code's hinge loss with margin 1 on signed labels."""
    sign = 2.0 * labels.to(predictions.dtype) - 1.0
    return _weighted(torch.relu(1.0 - sign * predictions), label_weights).mean()


def softmax_loss(
    predictions: torch.Tensor, labels: torch.Tensor, label_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The starter code's softmax loss; a video without labels contributes 0. With
    `label_weights`, the softmax is over the classes of weight > 0."""
    y = labels.to(predictions.dtype)
    if label_weights is None:
        log_p = torch.log_softmax(predictions, dim=1)
    else:
        weights = label_weights.to(predictions.device, predictions.dtype)
        rated = weights > 0
        y = y * weights
        log_p = torch.log_softmax(predictions.masked_fill(~rated, float("-inf")), dim=1)
        log_p = log_p.masked_fill(~rated, 0.0)
    target = y / y.sum(dim=1, keepdim=True).clamp_min(1e-7)
    return -(target * log_p).sum(dim=1).mean()


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
        return lambda predictions, labels, label_weights=None: cross_entropy_loss(
            predictions, labels, alpha, label_weights
        )
    return LOSSES[name]
