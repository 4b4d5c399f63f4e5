"""Learnable pooling of a video's frames (fidelity.md §4).

Every module takes the sampled frames of one modality ``x [B, N, D]`` (after the
model's input batch norm; a channel slice of it is fine) and returns ``[B, output_size]``.
Cluster weights are N(0, 1/D) (std 1/sqrt(D)); the assignment logits go through slim's
batch norm over the K clusters, statistics over all B*N frames.

Layouts follow the original: VLAD/FV outputs are flattened D-major (index ``d*K + k``).
The aggregations are batched matmuls ``x^T a`` (``[B, D, N] @ [B, N, K]``), never a
``[B, N, D, K]`` tensor.

Autocast: the custom autograd Functions below run their matmuls in the precision autocast
gives a matmul where they are called (bfloat16 under ``--amp``), save their inputs in that
precision and compute their backward in it (autograd casts each gradient back to its
input's dtype); the normalisations run in float32 at least, whatever their input.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from yt8m.errors import YT8MError
from yt8m.models.layers import (
    BiasOrBatchNorm,
    l2_normalize,
    normal_parameter,
    variance_scaling_parameter,
)


class ClusterLogits(nn.Module):
    """``BN(x W)``: ``[B, N, D] -> [B*N, K]``; W is ``[D, K]``, N(0, 1/D) (with
    `variance_scaling`, slim's variance scaling: NeXtVLAD's).

    Without batch norm a bias N(0, 1/D) takes its place (see `BiasOrBatchNorm`).
    """

    def __init__(
        self,
        feature_size: int,
        cluster_size: int,
        add_batch_norm: bool,
        variance_scaling: bool = False,
    ) -> None:
        super().__init__()
        std = 1 / math.sqrt(feature_size)
        self.weight = (
            variance_scaling_parameter(feature_size, cluster_size)
            if variance_scaling
            else normal_parameter(feature_size, cluster_size, std=std)
        )
        self.after = BiasOrBatchNorm(cluster_size, add_batch_norm, bias_std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(x.reshape(-1, x.shape[-1]) @ self.weight)


class SoftAssignment(ClusterLogits):
    """``a = softmax(BN(x W))`` over the K clusters: ``[B, N, D] -> [B, N, K]``.

    With `groups` G (NeXtVLAD) W is ``[D, G*K]``, the batch norm covers the G*K logits,
    and each frame's G groups have a softmax over K of their own:
    ``[B, N, D] -> [B, N*G, K]`` (row ``n*G + g``).
    """

    def __init__(
        self,
        feature_size: int,
        cluster_size: int,
        add_batch_norm: bool,
        groups: int = 1,
        variance_scaling: bool = False,
    ) -> None:
        super().__init__(feature_size, groups * cluster_size, add_batch_norm, variance_scaling)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x).view(x.shape[0], x.shape[1] * self.groups, -1)
        return torch.softmax(logits, dim=-1)


def _matmul_dtype(x: torch.Tensor, a: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of `x` and `a` runs in here: autocast's when it is on for their
    device type, else their common dtype."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(x.dtype, a.dtype)


class _Aggregate(torch.autograd.Function):
    """``x^T a`` whose gradient for ``x`` comes out in x's own ``[B, N, D]`` layout
    (autograd's bmm backward gives ``[B, D, N]`` and a transposing copy)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        dtype = _matmul_dtype(x, a)
        x, a = x.to(dtype), a.to(dtype)
        ctx.save_for_backward(x, a)
        return torch.bmm(x.transpose(1, 2), a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, a = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = torch.bmm(a, grad.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_a = torch.bmm(x, grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_a


def aggregate(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sum_t a[b,t,k] x[b,t,d]`` as ``[B, D, K]`` (one batched matmul)."""
    return _Aggregate.apply(x, a)


class _AggregateSquares(torch.autograd.Function):
    """``(x^2)^T a``; its gradient for x, ``2 x (a g^T)``, is the bmm and one in-place
    pass (autograd's square backward adds two allocating passes over ``[B, N, D]``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        dtype = _matmul_dtype(x, a)
        squares = x.square().to(dtype)  # squared in x's precision, then rounded
        x, a = x.to(dtype), a.to(dtype)
        ctx.save_for_backward(x, squares, a)
        return torch.bmm(squares.transpose(1, 2), a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, squares, a = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(a, (2 * grad).transpose(1, 2)).mul_(x)
        grad_a = torch.bmm(squares, grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_a


def vlad_residuals(x: torch.Tensor, a: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``V[b,d,k] = sum_t a[b,t,k] x[b,t,d] - (sum_t a[b,t,k]) c[d,k]``: ``[B, D, K]``
    from ``x [B, N, D]``, ``a [B, N, K]`` and ``centers [D, K]``."""
    return torch.addcmul(aggregate(x, a), a.sum(1, keepdim=True), centers, value=-1)


def aggregate_squares(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sum_t a[b,t,k] x[b,t,d]^2`` as ``[B, D, K]``."""
    return _AggregateSquares.apply(x, a)


class _IntraThenGlobalNormalize(torch.autograd.Function):
    """``out = v * s_k`` with ``s_k = r_k R``: ``r_k = 1 / max(n_k, 1e-6)`` (n_k: cluster
    k's norm over D) and ``R = 1 / max(||(n_k r_k)_k||, 1e-6)``, the whole-vector norm
    after the per-cluster step. Its backward, ``g s + v c_k``, takes two passes over
    ``[B, D, K]`` where autograd's would take about seven."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        v = v.to(torch.promote_types(v.dtype, torch.float32))  # float32 at least
        norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)  # [B, 1, K]
        inverse = 1 / norms.clamp_min(_NORM_FLOOR)
        units = norms * inverse  # 1, or n_k / 1e-6 below the floor
        total = torch.linalg.vector_norm(units, dim=2, keepdim=True)  # [B, 1, 1]
        outer = 1 / total.clamp_min(_NORM_FLOOR)
        scale = inverse * outer
        ctx.save_for_backward(v, norms, inverse, units, total, outer, scale)
        return v * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        v, norms, inverse, units, total, outer, scale = ctx.saved_tensors
        grad = grad.to(v.dtype)
        q = (grad * v).sum(1, keepdim=True)  # dL/ds_k, [B, 1, K]
        above = norms > _NORM_FLOOR
        # Through r_k: dr/dn = -1/n^2 above the floor, 0 below.
        d_norms = torch.where(above, -q * outer / norms.square().clamp_min(_NORM_FLOOR**2), 0)
        # Through R: dR/dT = -1/T^2 above the floor; dT/du_k = u_k/T; du_k/dn_k = 1/1e-6
        # below the floor, 0 above.
        d_outer = (q * inverse).sum(2, keepdim=True)
        d_total = torch.where(total > _NORM_FLOOR, -d_outer / total.square(), 0)
        d_units = d_total * units / total.clamp_min(_NORM_FLOOR)
        d_norms = d_norms + torch.where(above, 0, d_units / _NORM_FLOOR)
        coefficient = torch.where(norms > 0, d_norms / norms.clamp_min(1e-30), 0)
        return torch.addcmul(grad * scale, v, coefficient)


_NORM_FLOOR = 1e-6  # tf.nn.l2_normalize's floor of 1e-12 on the squared norm


def intra_then_global_normalize(v: torch.Tensor) -> torch.Tensor:
    """L2-normalise each cluster's D-vector of ``v [B, D, K]``, then the whole ``D*K``
    vector (two tf.nn.l2_normalize calls), returning ``[B, D*K]`` (D-major)."""
    return _IntraThenGlobalNormalize.apply(v).reshape(v.shape[0], -1)


def global_normalize(v: torch.Tensor) -> torch.Tensor:
    """tf.nn.l2_normalize of each row of ``v [B, ...]``, returned as ``[B, size]``
    (the same function with one cluster: its backward is two passes too)."""
    return _IntraThenGlobalNormalize.apply(v.reshape(v.shape[0], -1, 1)).view(v.shape[0], -1)


class NetVLAD(nn.Module):
    """``V[d,k] = sum_t a_tk x_td - (sum_t a_tk) c_dk``, intra- then globally L2-normalised.

    ``c`` (``[D, K]``, N(0, 1/D)) is the original's ``cluster_weights2``.
    ``[B, N, D] -> [B, D*K]``.
    """

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True) -> None:
        super().__init__()
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm)
        self.centers = normal_parameter(feature_size, cluster_size, std=1 / math.sqrt(feature_size))
        self.output_size = feature_size * cluster_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return intra_then_global_normalize(vlad_residuals(x, self.assignment(x), self.centers))


class NetRVLAD(nn.Module):
    """NetVLAD without the centres (the seed's ``--lightvlad``): ``V = x^T a``.
    ``[B, N, D] -> [B, D*K]``."""

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True) -> None:
        super().__init__()
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm)
        self.output_size = feature_size * cluster_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return intra_then_global_normalize(aggregate(x, self.assignment(x)))


class NetVLAGD(nn.Module):
    """``V[d,k] = (sum_t a_tk x_td) * sigmoid(G[k,d])`` (``--vlagd``), normalised as NetVLAD.

    G is the original's ``gate_weights`` (``[K, D]``, N(0, 1/D)). ``[B, N, D] -> [B, D*K]``.
    """

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True) -> None:
        super().__init__()
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm)
        self.gate_weights = normal_parameter(
            cluster_size, feature_size, std=1 / math.sqrt(feature_size)
        )
        self.output_size = feature_size * cluster_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = aggregate(x, self.assignment(x)) * torch.sigmoid(self.gate_weights).t()
        return intra_then_global_normalize(v)


class NetFV(nn.Module):
    """The NetFV Fisher-vector pooling: ``[B, N, D] -> [B, 2*D*K]`` (``[fv1, fv2]``).

    ``s = w^2 + 1e-6`` with w (``covar_weights``) N(1, 1/D);
    ``fv1 = (sum_t a x - a_sum c) / s``, intra- then globally normalised;
    ``fv2 = (sum_t a x^2 - 2 c sum_t a x + a_sum c^2) / s^2 - a_sum``, globally normalised.
    ``c`` is its own weight (N(0, 1/D)) or, with `couple_weights`,
    ``coupling_factor * W`` (W: the assignment weights).
    """

    def __init__(
        self,
        feature_size: int,
        cluster_size: int,
        add_batch_norm: bool = True,
        couple_weights: bool = True,
        coupling_factor: float = 0.01,
    ) -> None:
        super().__init__()
        std = 1 / math.sqrt(feature_size)
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm)
        self.covar_weights = normal_parameter(feature_size, cluster_size, std=std, mean=1.0)
        self.centers = (
            None if couple_weights else normal_parameter(feature_size, cluster_size, std=std)
        )
        self.coupling_factor = coupling_factor
        self.output_size = 2 * feature_size * cluster_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.assignment(x)
        a_sum = a.sum(1, keepdim=True)  # [B, 1, K]
        c = (
            self.centers
            if self.centers is not None
            else self.coupling_factor * self.assignment.weight
        )
        inverse = 1 / (self.covar_weights.square() + 1e-6)  # 1/s, [D, K]
        inverse2 = inverse.square()
        ax = aggregate(x, a)
        # fv1 = ax/s - a_sum c/s; fv2 = ax2/s^2 - ax 2c/s^2 + a_sum (c^2/s^2 - 1):
        # [D, K] factors times the big [B, D, K] sums, two or three passes each.
        fv1 = torch.addcmul(ax * inverse, a_sum, c * inverse, value=-1)
        fv2 = aggregate_squares(x, a) * inverse2
        fv2 = torch.addcmul(fv2, ax, c * inverse2, value=-2)
        fv2 = torch.addcmul(fv2, a_sum, c.square() * inverse2 - 1)
        return torch.cat([intra_then_global_normalize(fv1), global_normalize(fv2)], dim=1)


class SoftDBoF(nn.Module):
    """``L2norm(sum_t a_t)``, plus ``L2norm(max_t a_t)`` with `max_pool`.
    ``[B, N, D] -> [B, K]`` (``[B, 2K]`` with `max_pool`)."""

    def __init__(
        self,
        feature_size: int,
        cluster_size: int,
        add_batch_norm: bool = True,
        max_pool: bool = False,
    ) -> None:
        super().__init__()
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm)
        self.max_pool = max_pool
        self.output_size = cluster_size * (2 if max_pool else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.assignment(x)
        pooled = l2_normalize(a.sum(1), dim=1)
        if not self.max_pool:
            return pooled
        return torch.cat([pooled, l2_normalize(a.amax(1), dim=1)], dim=1)


class GatedDBoF(nn.Module):
    """``g = sigmoid(BN2(L2norm(max_t a_t) R W2))``; output ``L2norm(g * sum_t a_t)``.

    R (``dim_red``, ``[K, D]``) and W2 (``[D, K]``) are N(0, 1/D).
    ``[B, N, D] -> [B, K]``.
    """

    def __init__(self, feature_size: int, cluster_size: int, add_batch_norm: bool = True) -> None:
        super().__init__()
        std = 1 / math.sqrt(feature_size)
        self.assignment = SoftAssignment(feature_size, cluster_size, add_batch_norm)
        self.dim_red = normal_parameter(cluster_size, feature_size, std=std)
        self.gate = ClusterLogits(feature_size, cluster_size, add_batch_norm)
        self.output_size = cluster_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.assignment(x)
        peaks = l2_normalize(a.amax(1), dim=1) @ self.dim_red  # [B, D]
        gates = torch.sigmoid(self.gate(peaks.unsqueeze(1)))
        return l2_normalize(gates * a.sum(1), dim=1)


class DBoF(nn.Module):
    """Deep bag of frames as the original's DbofModelLF builds it:
    ``act(BN(x W))`` with ReLU6 or GLU, then ``[L2norm(mean_t), L2norm(max_t)]``.

    With ``activation="glu"`` the K projected channels are split in halves ``(u, v)``
    and ``u * sigmoid(v)`` keeps K/2 of them. ``[B, N, D] -> [B, 2*C]`` where C is K
    (relu6) or K/2 (glu). (The original compared a tensor with the activation name,
    so it never applied either; this project applies the one named.)
    """

    def __init__(
        self,
        feature_size: int,
        cluster_size: int,
        activation: str = "relu",
        add_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "glu"):
            raise YT8MError(f"--dbof_activation={activation!r}: expected 'relu' or 'glu'")
        self.logits = ClusterLogits(feature_size, cluster_size, add_batch_norm)
        self.activation = activation
        channels = cluster_size // 2 if activation == "glu" else cluster_size
        self.output_size = 2 * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.logits(x)
        if self.activation == "glu":
            h = F.glu(h, dim=-1)
        else:
            h = F.relu6(h)
        h = h.view(x.shape[0], x.shape[1], -1)
        return torch.cat([l2_normalize(h.mean(1), dim=1), l2_normalize(h.amax(1), dim=1)], dim=1)
