"""From a loader batch to the model's input, on the batch's device (fidelity.md §2).

Frame-level: dequantize each byte ``x * 4/255 + (4/512 - 2)``, zero the padding rows
(``t >= num_frames``; the original padded with zeros after dequantizing), then L2-normalise
every frame's whole vector as TensorFlow's ``l2_normalize`` does:
``x * rsqrt(max(sum(x**2), 1e-12))``, so zero rows stay exactly zero. Video-level float
features are L2-normalised the same way.
"""

from __future__ import annotations

import torch

MAX_QUANTIZED_VALUE = 2.0
MIN_QUANTIZED_VALUE = -2.0
L2_EPSILON = 1e-12


def dequantize(
    quantized: torch.Tensor,
    max_quantized_value: float = MAX_QUANTIZED_VALUE,
    min_quantized_value: float = MIN_QUANTIZED_VALUE,
) -> torch.Tensor:
    """uint8 features -> float32 in [min, max]: ``q * range/255 + range/512 + min``."""
    quantized_range = max_quantized_value - min_quantized_value
    scale = quantized_range / 255.0
    bias = quantized_range / 512.0 + min_quantized_value
    return quantized.to(torch.float32).mul_(scale).add_(bias)


def _l2_normalize_(x: torch.Tensor, row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """In place over the last dimension; rows where `row_mask` is False become 0."""
    inverse_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    inverse_norm.square_().clamp_(min=L2_EPSILON).rsqrt_()
    if row_mask is not None:
        inverse_norm.mul_(row_mask.unsqueeze(-1))
    return x.mul_(inverse_norm)


def model_inputs(inputs: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
    """A batch's ``inputs`` -> float32 model input on the same device.

    inputs: uint8 ``[B, T, D]`` frames (frame-level) or float ``[B, D]`` (video-level).
    num_frames: int64 ``[B]``; frame rows ``t >= num_frames[b]`` come out exactly 0.
    Returns float32 ``[B, T, D]`` (unit-norm real frames) or ``[B, D]`` (unit-norm rows).
    """
    if inputs.dtype == torch.uint8:
        frames = dequantize(inputs)
        steps = torch.arange(frames.shape[1], device=frames.device)
        real = steps.unsqueeze(0) < num_frames.to(frames.device).unsqueeze(1)
        return _l2_normalize_(frames, real)
    return _l2_normalize_(inputs.to(torch.float32, copy=True))
