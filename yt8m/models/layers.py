"""Small pieces shared by every model: the original's batch norm, L2 normalisation,
initialisers, the hidden layer and a parameter counter (fidelity.md §4)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# slim.batch_norm: decay 0.999 (PyTorch's momentum is 1 - decay), epsilon 1e-3.
BN_MOMENTUM = 0.001
BN_EPS = 1e-3
# tf.nn.l2_normalize floors the squared norm at this value.
L2_EPS = 1e-12


def batch_norm(num_features: int) -> nn.BatchNorm1d:
    """slim's batch norm (center and scale on) over the last dimension of a 2-D input."""
    return nn.BatchNorm1d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM, affine=True)


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / sqrt(max(sum(x^2), 1e-12))`` along `dim`, as tf.nn.l2_normalize."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return x / norm.clamp_min(math.sqrt(L2_EPS))


def normal_parameter(*shape: int, std: float, mean: float = 0.0) -> nn.Parameter:
    """A parameter drawn from N(mean, std^2) (tf.random_normal_initializer)."""
    return nn.Parameter(torch.empty(*shape).normal_(mean, std))


def variance_scaling_parameter(*shape: int) -> nn.Parameter:
    """slim's ``variance_scaling_initializer()`` (factor 2, fan-in, truncated normal):
    N(0, 2.6 / fan_in) redrawn beyond 2 standard deviations, so the variance is about
    2 / fan_in. fan_in is ``shape[-2]`` times the leading dimensions (``shape[0]`` of a
    vector), as TensorFlow counts it."""
    fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
    std = math.sqrt(1.3 * 2.0 / fan_in)
    tensor = torch.empty(*shape).normal_(0.0, std)
    if not tensor.is_meta:  # redraw the values beyond 2 std, as TensorFlow does
        flat = tensor.view(-1)
        index = (flat.abs() > 2 * std).nonzero().squeeze(1)
        while index.numel():
            values = torch.empty(index.numel()).normal_(0.0, std)
            flat[index] = values
            index = index[values.abs() > 2 * std]
    return nn.Parameter(tensor)


def glorot_uniform_(tensor: torch.Tensor, fan_in: int, fan_out: int) -> torch.Tensor:
    """Glorot (Xavier) uniform with explicit fans (TensorFlow's default initialiser)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-limit, limit)


def count_trainable_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (works on the `meta` device)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class BiasOrBatchNorm(nn.Module):
    """Where the original puts a batch norm, or a learned bias when batch norm is off.

    The original's no-batch-norm path references undefined names and cannot run
    (fidelity.md §4); this project's documented replacement is a bias initialised
    N(0, `bias_std`^2). Input and output: ``[N, num_features]``.
    """

    def __init__(self, num_features: int, use_batch_norm: bool, bias_std: float) -> None:
        super().__init__()
        self.norm = batch_norm(num_features) if use_batch_norm else None
        self.bias = None if use_batch_norm else normal_parameter(num_features, std=bias_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.norm is not None else x + self.bias


class HiddenLayer(nn.Module):
    """``h = pooled @ W`` then batch norm or a bias, then optionally ReLU6.

    W is N(0, `weight_std`^2) (the original uses 1/sqrt(clusters), not the fan-in), or
    slim's variance scaling over the fan-in when `weight_std` is None (NeXtVLAD's);
    the bias (used when `batch_norm` is False) is N(0, 0.01^2).
    Input ``[B, in_size]`` -> output ``[B, out_size]``.
    """

    def __init__(
        self, in_size: int, out_size: int, weight_std: float | None, batch_norm: bool, relu6: bool
    ) -> None:
        super().__init__()
        self.weight = (
            variance_scaling_parameter(in_size, out_size)
            if weight_std is None
            else normal_parameter(in_size, out_size, std=weight_std)
        )
        self.after = BiasOrBatchNorm(out_size, batch_norm, bias_std=0.01)
        self.relu6 = relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.after.bias is not None:
            h = torch.addmm(self.after.bias, x, self.weight)
        else:
            h = self.after(x @ self.weight)
        return F.relu6(h) if self.relu6 else h


class Dense(nn.Module):
    """slim's ``fully_connected``: ``x W + b``, W ``[in_size, out_size]`` by variance
    scaling, b zeros. ``[..., in_size] -> [..., out_size]``."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.weight = variance_scaling_parameter(in_size, out_size)
        self.bias = nn.Parameter(torch.zeros(out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return flat.view(*x.shape[:-1], -1)
