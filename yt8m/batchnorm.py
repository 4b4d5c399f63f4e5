"""Re-estimate batch-norm running statistics after a short training run.

The original's batch norm keeps running statistics with a decay of 0.999 per step
(fidelity.md §4), made for hundreds of thousands of steps: after a few hundred, the
statistics used in evaluation are still mostly their initial values (mean 0,
variance 1). `yt8m train --recalibrate_batch_norm=N` (off by default, so training stays
faithful) replaces them at the end of training by their average over N training batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from yt8m.models.sampling import random_key, step_key


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
