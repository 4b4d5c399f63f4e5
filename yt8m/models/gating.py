"""Context Gating (fidelity.md §4): ``h * sigmoid(BN(h Wg))``, and NeXtVLAD's
squeeze-and-excitation form (successors.md §3)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from yt8m.models.layers import (
    BiasOrBatchNorm,
    batch_norm,
    normal_parameter,
    variance_scaling_parameter,
)


class ContextGating(nn.Module):
    """``[B, size] -> [B, size]``: ``h * sigmoid(BN(h Wg))``, Wg ``[size, size]`` N(0, 1/size).

    `remove_diag` subtracts each unit's own contribution (``diag(Wg) * h``) from its gate.
    Without batch norm a bias N(0, 1/size) replaces it (the original's bias had the
    wrong size and could not run).
    """

    def __init__(self, size: int, remove_diag: bool = False, add_batch_norm: bool = True) -> None:
        super().__init__()
        std = 1 / math.sqrt(size)
        self.weight = normal_parameter(size, size, std=std)
        self.after = BiasOrBatchNorm(size, add_batch_norm, bias_std=std)
        self.remove_diag = remove_diag

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gates = h @ self.weight
        if self.remove_diag:
            gates = gates - torch.diagonal(self.weight) * h
        return h * torch.sigmoid(self.after(gates))


class SEContextGating(nn.Module):
    """``[B, size] -> [B, size]``: ``h * sigmoid(relu(BN(h W1)) W2)`` (NeXtVLAD's gating).

    W1 ``[size, size // reduction]`` and W2 ``[size // reduction, size]``, slim's variance
    scaling, no biases; one batch norm (centre and scale) on the squeezed units.
    """

    def __init__(self, size: int, reduction: int) -> None:
        super().__init__()
        squeezed = size // reduction
        self.squeeze = variance_scaling_parameter(size, squeezed)
        self.norm = batch_norm(squeezed)
        self.excite = variance_scaling_parameter(squeezed, size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gates = F.relu(self.norm(h @ self.squeeze)) @ self.excite
        return h * torch.sigmoid(gates)
