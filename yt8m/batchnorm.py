"""The statistics batch norm uses outside training.

* `batch_norm_statistics(model, "moving" | "batch")` (``--batch_norm_statistics`` of
  ``eval`` and ``infer``, docs/fidelity.md §6.3): ``moving``, the default, normalises with
  the moving averages, as the original's eval.py did; ``batch`` normalises every batch
  norm with the statistics of the batch being predicted and leaves the moving averages
  as they are, as the original's inference.py did (it restored the training graph).
* `recalibrate_batch_norm(model, batches)`: the original's batch norm keeps running
  statistics with a decay of 0.999 per step (fidelity.md §4), made for hundreds of
  thousands of steps: after a few hundred, the statistics used in evaluation are still
  mostly their initial values (mean 0, variance 1). `yt8m train --recalibrate_batch_norm=N`
  (off by default, so training stays faithful) replaces them at the end of training by
  their average over N training batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from yt8m.errors import YT8MError
from yt8m.models.sampling import random_key, step_key

BATCH_NORM_STATISTICS = ("moving", "batch")


class BatchNormStatisticsError(YT8MError, ValueError):
    """An unknown `--batch_norm_statistics`."""


@contextmanager
def batch_norm_statistics(model: nn.Module, statistics: str) -> Iterator[None]:
    """Within the block, every batch norm of `model` normalises with `statistics`.

    ``"moving"``: as the model's mode says (nothing changes). ``"batch"``: each norm is put
    in PyTorch's "batch statistics, nothing tracked" mode (``training=True``,
    ``track_running_stats=False``): the statistics of its input batch, running statistics
    neither used nor updated. Nothing else of the model changes (frame sampling keeps the
    model's mode); every flag is restored on leaving. Raises `BatchNormStatisticsError`
    for another value.
    """
    if statistics not in BATCH_NORM_STATISTICS:
        raise BatchNormStatisticsError(
            f"--batch_norm_statistics={statistics!r}: choose one of "
            f"{', '.join(BATCH_NORM_STATISTICS)}"
        )
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(norm.training, norm.track_running_stats) for norm in norms]
    if statistics == "batch":
        for norm in norms:
            norm.training, norm.track_running_stats = True, False
    try:
        yield
    finally:
        for norm, (training, track) in zip(norms, saved, strict=True):
            norm.training, norm.track_running_stats = training, track


def recalibrate_batch_norm(
    model: nn.Module, batches: Iterable[dict], sampling_base: torch.Tensor | None = None
) -> int:
    """Set every batch norm's running mean/variance to their mean over `batches`.

    batches: loader batches (``inputs``, ``num_frames``) on any device; the model's
    device is used. Batch i samples its frames with ``step_key(sampling_base, i)``
    (`yt8m.models.sampling`; a random base when None). Returns the number of batches seen; the model is left in eval mode,
    its weights untouched and its batch norms' momentum restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    device = next(model.parameters()).device
    base = (random_key() if sampling_base is None else sampling_base).to(device)
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                for norm in norms:
                    norm.momentum = 1.0 / (seen + 1)  # a running mean of the batches' statistics
                num_frames = batch["num_frames"].to(device)
                model(batch["inputs"].to(device), num_frames, step_key(base, seen))
                seen += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
    return seen
