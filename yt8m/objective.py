"""The loss of one training step, as the original train.py scripts form it.

    label = L(p) + sum_i L(q_i)
    total = label + regularization_penalty * model.regularization_loss()

``p``: the model's predictions; ``q_i``: its ``auxiliary_predictions()`` (the branches of
`MixNeXtVladModel`, whose label losses linrongc's train.py adds; other models have
none). ``L(q) = label_loss(q, labels, label_weights)`` (``--label_loss``; the batch's
``label_weights`` ``[B, C]`` when it has them, the rated segments' of ``--segment_labels``,
so that only rated classes count: successors.md §2), or with ``--distill_from`` the
mix of labels and the teachers' soft targets of `yt8m.distill`. The mixture's
on-the-fly distillation is part of its ``regularization_loss()``, which the penalty
multiplies as linrongc's train.py multiplies a model's ``regularization_loss``
(fidelity.md §5, successors.md §3).
"""

from __future__ import annotations

import torch
from torch import nn

from yt8m.distill import DistillationError, SoftTargets
from yt8m.flags import Flags
from yt8m.losses import get_loss


class Objective:
    """``objective(model, predictions, labels, batch, inputs, num_frames, key) ->
    (label loss, total loss)``, scalars; `model` is the bare module that made `predictions`
    (``[B, num_classes]``) from `inputs` with the sampling `key` in this step, `labels` the
    batch's on their device."""

    def __init__(self, flags: Flags, device: torch.device) -> None:
        self.label_loss = get_loss(flags.label_loss, flags.alpha)
        self.penalty = flags.regularization_penalty
        if flags.distill_from and flags.segment_labels:
            raise DistillationError(
                "--distill_from with --segment_labels: the soft targets cover every class, "
                "the rated segments only their rated classes; distil on video-level data, "
                "then fine-tune the student on the segments"
            )
        self.soft_targets = SoftTargets(flags, device) if flags.distill_from else None

    def __call__(
        self,
        model: nn.Module,
        predictions: torch.Tensor,
        labels: torch.Tensor,
        batch: dict,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = None
        if self.soft_targets is not None:
            targets = self.soft_targets(batch["video_ids"], inputs, num_frames, key)
        auxiliary = getattr(model, "auxiliary_predictions", list)()
        weights = batch.get("label_weights")
        label = sum(
            self._label_loss(p.float(), labels, weights, targets) for p in [predictions, *auxiliary]
        )
        return label, label + self.penalty * model.regularization_loss()

    def _label_loss(
        self,
        predictions: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> torch.Tensor:
        loss = self.label_loss(predictions, labels, weights)
        if targets is None:
            return loss
        return self.soft_targets.loss(loss, predictions, targets)
