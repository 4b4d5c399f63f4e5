"""Context Gating (fidelity.md §4): ``h * sigmoid(BN(h Wg))``."""

from __future__ import annotations

import math

import torch
from torch import nn

from yt8m.models.layers import BiasOrBatchNorm, normal_parameter


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
