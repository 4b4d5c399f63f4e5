"""An exponential moving average of the weights (``yt8m train --ema_decay=D``).

After every optimizer step ``shadow = D * shadow + (1 - D) * weights`` for every floating
tensor of the model's state: the parameters and the batch-norm running statistics (as
miha-skalic/youtube8mchallenge averaged the model variables, batch norm included;
successors.md §3). Integer buffers (``num_batches_tracked``) are copied. The shadow
starts as the weights of the first step it sees (the initial ones, or those of a resumed
checkpoint without an average).

Checkpoints keep the shadow as a full state dict (`Checkpoint.ema_state`); eval, infer
and export use it when present unless ``--use_ema=False`` (`prediction_state`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from yt8m.batchnorm import recalibrate_batch_norm
from yt8m.errors import YT8MError

log = logging.getLogger(__name__)


class WeightAverage:
    """The EMA of `model`'s state; `update` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float, state: dict[str, Any] | None = None):
        if not 0 < decay < 1:
            raise YT8MError(f"--ema_decay={decay}: expected a number between 0 and 1 (0: off)")
        self.decay = decay
        current = model.state_dict()
        if state is not None and state.keys() != current.keys():
            raise YT8MError("the checkpoint's EMA state does not match the model's tensors")
        source = state if state is not None else current
        self.shadow = {
            name: source[name].detach().to(tensor.device, copy=True)
            for name, tensor in current.items()
        }
        pairs = [(self.shadow[n], t) for n, t in current.items() if t.is_floating_point()]
        self._averaged = [list(side) for side in zip(*pairs, strict=True)] if pairs else [[], []]
        self._copied = [
            (self.shadow[n], t) for n, t in current.items() if not t.is_floating_point()
        ]

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow towards the model's current weights (one fused pass)."""
        shadows, weights = self._averaged
        if shadows:
            torch._foreach_lerp_(shadows, weights, 1.0 - self.decay)
        for shadow, tensor in self._copied:
            shadow.copy_(tensor)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged state, loadable by the model's ``load_state_dict``."""
        return self.shadow

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Within the block `model` holds the averaged weights; changes made to them there
        (batch-norm statistics) stay in the shadow. The model's own come back after."""
        own = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in model.state_dict().items():
                    self.shadow[name].copy_(tensor)
            model.load_state_dict(own)

    def recalibrate_batch_norm(
        self, model: nn.Module, batches: Iterable[dict], sampling_base: torch.Tensor | None
    ) -> None:
        """`yt8m.batchnorm.recalibrate_batch_norm` for the averaged weights."""
        with self.swapped_in(model):
            recalibrate_batch_norm(model, batches, sampling_base)


def for_training(
    model: nn.Module, decay: float, saved: dict[str, Any] | None
) -> WeightAverage | None:
    """The EMA of a run (None when `decay` is 0), resumed from a checkpoint's `saved`."""
    if decay == 0:
        return None
    if saved is None:
        log.info("EMA of the weights (decay %g) starts from the current weights", decay)
    return WeightAverage(model, decay, saved)


def prediction_state(checkpoint: Any, use_ema: bool) -> dict[str, torch.Tensor]:
    """The weights to predict with: the checkpoint's EMA when it has one and `use_ema`."""
    if use_ema and checkpoint.ema_state is not None:
        log.info("using the EMA weights of %s (--use_ema=False for the raw ones)", checkpoint.path)
        return checkpoint.ema_state
    return checkpoint.model_state
