"""Classifiers on a pooled video representation (fidelity.md §4): `MoE` and `Logistic`.

Both map ``x [B, input_size]`` to probabilities ``[B, num_classes]`` and expose
``regularization_loss()``: ``l2_penalty * 0.5 * sum ||W||^2`` over their weights
(not the biases, not the MoE's probability gating), as slim's l2_regularizer.
Weights are stored as the original's ``[in, out]`` matrices; Glorot uniform, biases 0.

Under autocast (``--amp``) the probabilities stay float32, so that top-k confidences do not
tie in bfloat16's 8-bit mantissa: `Logistic` runs in float32 altogether (one small matmul),
`MoE` keeps its matmuls in autocast's precision and applies its softmax and sigmoids to
float32 logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from yt8m.errors import YT8MError
from yt8m.models.layers import (
    batch_norm,
    glorot_uniform_,
    normal_parameter,
    variance_scaling_parameter,
)


def _glorot_parameter(fan_in: int, fan_out: int) -> nn.Parameter:
    return nn.Parameter(glorot_uniform_(torch.empty(fan_in, fan_out), fan_in, fan_out))


def _squared_norms(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.linalg.vector_norm(w).square() for w in weights)


def _float32_at_least(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 (float64 stays float64): bfloat16 logits before a sigmoid or softmax."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class Logistic(nn.Module):
    """``sigmoid(x W + b)``: ``[B, input_size] -> [B, num_classes]`` (the starter's).

    linrongc's LogisticModel (``linrongc=True``): W by slim's variance scaling instead of
    Glorot, and the L2 penalty on the bias too.
    """

    def __init__(
        self, input_size: int, num_classes: int, l2_penalty: float = 1e-8, linrongc: bool = False
    ) -> None:
        super().__init__()
        self.weight = (
            variance_scaling_parameter(input_size, num_classes)
            if linrongc
            else _glorot_parameter(input_size, num_classes)
        )
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.l2_penalty = l2_penalty
        self.penalize_bias = linrongc

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x W + b``: ``[B, input_size] -> [B, num_classes]``, in float32 at least (under
        ``--amp`` too: the logistic runs wholly in float32)."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.addmm(self.bias, _float32_at_least(x), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def regularization_loss(self) -> torch.Tensor:
        penalized = [self.weight, self.bias] if self.penalize_bias else [self.weight]
        return self.l2_penalty * 0.5 * _squared_norms(penalized)


class MoE(nn.Module):
    """Mixture of `num_mixtures` logistic experts per class plus a dummy expert that says 0.

    gates: ``softmax`` over ``m+1`` of ``x Wg`` (no bias; with `low_rank_gating` r > 0,
    ``(x Wg1) Wg2`` through rank r); experts ``sigmoid(x We + be)``;
    ``p_c = sum_{i<m} gate_{c,i} expert_{c,i}``. Columns are class-major: gate column
    ``c*(m+1) + i``, expert column ``c*m + i``.

    Probability gating (`prob_gating`): ``p * sigmoid(BN(z Wp))`` with z = p
    (``prob_gating_input="prob"``, Wp ``[V, V]``) or z = x (``"input"``, Wp ``[in, V]``),
    Wp N(0, 1/V); `remove_diag` subtracts ``diag(Wp) * p`` from the gates first.
    ``[B, input_size] -> [B, num_classes]``.
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        num_mixtures: int = 2,
        l2_penalty: float = 1e-8,
        low_rank_gating: int = -1,
        prob_gating: bool = False,
        prob_gating_input: str = "prob",
        remove_diag: bool = False,
    ) -> None:
        super().__init__()
        if num_mixtures < 1:
            raise YT8MError(f"--moe_num_mixtures={num_mixtures}: needs at least 1 expert")
        if prob_gating_input not in ("prob", "input"):
            raise YT8MError(
                f"--moe_prob_gating_input={prob_gating_input!r}: expected 'prob' or 'input'"
            )
        gate_in = prob_gating_input == "input"
        if prob_gating and remove_diag and gate_in and input_size < num_classes:
            raise YT8MError(
                "--gating_remove_diag with --moe_prob_gating_input=input needs an input at "
                f"least as wide as the vocabulary ({input_size} < {num_classes})"
            )
        gate_columns = num_classes * (num_mixtures + 1)
        if low_rank_gating > 0:
            self.gate_weights = nn.ParameterList(
                [
                    _glorot_parameter(input_size, low_rank_gating),
                    _glorot_parameter(low_rank_gating, gate_columns),
                ]
            )
        else:
            self.gate_weights = nn.ParameterList([_glorot_parameter(input_size, gate_columns)])
        self.expert_weights = _glorot_parameter(input_size, num_classes * num_mixtures)
        self.expert_bias = nn.Parameter(torch.zeros(num_classes * num_mixtures))
        self.num_classes = num_classes
        self.num_mixtures = num_mixtures
        self.l2_penalty = l2_penalty
        self.prob_gating_input = prob_gating_input
        self.remove_diag = remove_diag
        self.prob_gate_weights = None
        self.prob_gate_norm = None
        if prob_gating:
            rows = input_size if gate_in else num_classes
            self.prob_gate_weights = normal_parameter(
                rows, num_classes, std=1 / math.sqrt(num_classes)
            )
            self.prob_gate_norm = batch_norm(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, m = x.shape[0], self.num_mixtures
        gate_logits = x
        for weight in self.gate_weights:
            gate_logits = gate_logits @ weight
        gate_logits = _float32_at_least(gate_logits).view(batch, self.num_classes, m + 1)
        gates = torch.softmax(gate_logits, dim=-1)
        expert_logits = torch.addmm(self.expert_bias, x, self.expert_weights)
        experts = torch.sigmoid(_float32_at_least(expert_logits))
        p = (gates[..., :m] * experts.view(batch, self.num_classes, m)).sum(-1)
        if self.prob_gate_weights is None:
            return p
        source = p if self.prob_gating_input == "prob" else x
        gates = source @ self.prob_gate_weights
        if self.remove_diag:
            gates = gates - torch.diagonal(self.prob_gate_weights)[: self.num_classes] * p
        return p * torch.sigmoid(_float32_at_least(self.prob_gate_norm(gates)))

    def regularization_loss(self) -> torch.Tensor:
        return self.l2_penalty * 0.5 * _squared_norms([*self.gate_weights, self.expert_weights])


@dataclass(frozen=True)
class ClassifierSpec:
    """Which classifier a frame-level model ends with (``--video_level_classifier_model``)
    and its settings; `build` makes it once the pooled size is known.

    ``"LogisticModel"`` keeps the starter's fixed L2 penalty 1e-8 (it never read
    ``--moe_l2``); ``"MoeModel"`` uses `l2_penalty` (``--moe_l2``).
    """

    name: str = "MoeModel"
    num_mixtures: int = 2
    l2_penalty: float = 1e-8
    low_rank_gating: int = -1
    prob_gating: bool = False
    prob_gating_input: str = "prob"
    remove_diag: bool = False

    def build(self, input_size: int, num_classes: int) -> nn.Module:
        if self.name == "MoeModel":
            return MoE(
                input_size,
                num_classes,
                num_mixtures=self.num_mixtures,
                l2_penalty=self.l2_penalty,
                low_rank_gating=self.low_rank_gating,
                prob_gating=self.prob_gating,
                prob_gating_input=self.prob_gating_input,
                remove_diag=self.remove_diag,
            )
        if self.name == "LogisticModel":
            return Logistic(input_size, num_classes)
        raise YT8MError(
            f"--video_level_classifier_model={self.name!r}: expected MoeModel or LogisticModel"
        )
