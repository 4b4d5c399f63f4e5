"""The losses of the training steps since the last look, kept on the device.

A step only keeps references to its two loss scalars (no copy, no kernel). Every
``METRICS_EVERY`` steps the trainer reads them all at once (`LossWindow.read`: one
device-to-host copy; under torchrun first one all-reduce, so that every rank sees the mean
over ranks, and a NaN on one rank is a NaN everywhere, at the same step). `read_voting`
adds a few numbers of each rank to that same all-reduce and returns their sums (the stop
requests of `yt8m.stopping`: every rank decides alike, without a collective of its own).
`peek` reads this rank's values without clearing them (rank 0 before it saves a checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from yt8m.distributed import Process


@dataclass(frozen=True)
class StepLoss:
    """One step's losses as read: the label loss and the total (with the penalty)."""

    step: int
    label_loss: float
    loss: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.label_loss)


class LossWindow:
    """`record` each step's losses; `read` them every so often (see the module docstring)."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []  # label loss, loss, label loss, ...

    def record(self, step: int, label_loss: torch.Tensor, loss: torch.Tensor) -> None:
        """Keep step `step`'s scalar losses (no device work)."""
        self._steps.append(step)
        self._losses += [label_loss.detach(), loss.detach()]

    def _values(
        self, process: Process | None, votes: Sequence[float] = ()
    ) -> tuple[list[StepLoss], list[float]]:
        if not self._steps and not votes:
            return [], []
        if self._steps:
            losses = torch.stack(self._losses).float()
        else:  # votes alone, on the device the collective runs on
            losses = torch.zeros(0, device=process.device if process is not None else "cpu")
        votes_at = losses.numel()
        if votes:
            tail = torch.tensor(votes, dtype=torch.float32, device=losses.device)
            losses = torch.cat([losses, tail])
        if process is not None and process.distributed:
            dist.all_reduce(losses, op=dist.ReduceOp.SUM)
            losses[:votes_at] /= process.world_size
        values = losses.tolist()
        pairs = zip(values[:votes_at:2], values[1:votes_at:2], strict=True)
        read = [StepLoss(s, a, b) for s, (a, b) in zip(self._steps, pairs, strict=True)]
        return read, values[votes_at:]

    def read(self, process: Process) -> list[StepLoss]:
        """The window's losses, mean over ranks (a collective under torchrun: every rank
        calls it at the same steps), in step order; the window starts anew."""
        return self.read_voting(process, ())[0]

    def read_voting(
        self, process: Process, votes: Sequence[float]
    ) -> tuple[list[StepLoss], list[float]]:
        """`read`, with this rank's `votes` summed over ranks in the same all-reduce:
        returns (losses, the sums of the votes). Every rank passes as many votes."""
        values = self._values(process, votes)
        self._steps, self._losses = [], []
        return values

    def peek(self) -> list[StepLoss]:
        """This rank's own losses of the window, which stays as it is."""
        return self._values(None)[0]
