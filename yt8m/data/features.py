"""Input transforms: what a model does first to the rows of a loader batch (fidelity.md §2).

The loader hands a model the records as they are: frame-level uint8 frames ``[B, T, D]``
(rows ``t >= num_frames`` are zero bytes) or video-level float32 features ``[B, D]``.
Every model owns a transform, chosen by its constructor, and applies it to the rows it
reads: a frame-sampling model gathers the uint8 rows first and transforms only the sampled
ones; a model that reads every row transforms them all.

A frame transform (`FrameTransform`) is called as ``transform(parts, real)``:

* ``parts``: uint8 tensors ``[..., w_i]``, consecutive channel blocks of the same rows in
  channel order, together the whole D-vector (part i holds channels
  ``sum(w_0..w_{i-1})`` to ``sum(w_0..w_i) - 1``). One part is the whole row; the pooling
  models pass one part per branch (e.g. rgb, audio), so that no full-width float copy is
  made.
* ``real``: bool ``[...]`` (the rows' leading shape): False marks padding rows.
* returns: a list of fresh float32 tensors ``[..., w_i]``, one per part, on the parts' device.

`WillowFrames` is the WILLOW/starter input, the default of every model: dequantize each
byte ``x * 4/255 + (4/512 - 2)``, then L2-normalise every frame's whole D-vector as
TensorFlow's ``l2_normalize``: ``x * rsqrt(max(sum(x**2), 1e-12))`` with the sum taken over
all parts; padding rows come out exactly 0 (the original padded with zeros after
dequantizing). Video-level float features are L2-normalised the same way (`L2Features`).
`PcaFrames` is linrongc's NeXtVLAD input (successors.md §3), the default of the NeXtVLAD
models: dequantize, zero the padding rows, then ``(x - offset) * scale`` per channel.
A new transform subclasses `FrameTransform` and implements ``forward``; per-channel
constants belong in buffers (``persistent=False`` when they are not model weights), so that
they move with the model to its device.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch
from torch import nn

from yt8m.errors import YT8MError

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


def real_rows(num_frames: torch.Tensor, max_frames: int) -> torch.Tensor:
    """bool ``[B, max_frames]``: row t of video b is a real frame (``t < num_frames[b]``)."""
    steps = torch.arange(max_frames, device=num_frames.device)
    return steps.unsqueeze(0) < num_frames.unsqueeze(1)


class FrameTransform(nn.Module):
    """uint8 frame rows -> float32 model input rows (the interface above)."""

    def forward(self, parts: Sequence[torch.Tensor], real: torch.Tensor) -> list[torch.Tensor]:
        """parts: uint8 ``[..., w_i]`` channel blocks of the same rows; real: bool ``[...]``.
        Returns float32 ``[..., w_i]`` per part."""
        raise NotImplementedError

    def rows(self, frames: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The whole rows ``frames [..., D]`` (uint8) -> float32 ``[..., D]``."""
        return self([frames], real)[0]

    def all_frames(self, inputs: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        """Every row of a batch: ``inputs`` uint8 ``[B, T, D]``, ``num_frames`` int64 ``[B]``
        (on any device) -> float32 ``[B, T, D]``."""
        return self.rows(inputs, real_rows(num_frames.to(inputs.device), inputs.shape[1]))


class WillowFrames(FrameTransform):
    """Dequantize, then L2-normalise each frame's whole vector; padding rows exactly 0."""

    def forward(self, parts: Sequence[torch.Tensor], real: torch.Tensor) -> list[torch.Tensor]:
        frames = [dequantize(part) for part in parts]
        norms = [torch.linalg.vector_norm(x, dim=-1) for x in frames]
        square_sum = norms[0].square_()
        for norm in norms[1:]:
            square_sum.add_(norm.square_())
        inverse_norm = square_sum.clamp_(min=L2_EPSILON).rsqrt_().mul_(real).unsqueeze(-1)
        return [x.mul_(inverse_norm) for x in frames]


class L2Features(nn.Module):
    """Video-level input: float ``[B, D]`` -> float32 ``[B, D]``, each row L2-normalised
    (epsilon as above; the input is not modified)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.to(torch.float32, copy=True)
        inverse_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x.mul_(inverse_norm.square_().clamp_(min=L2_EPSILON).rsqrt_())


EIGENVALUES_FILE = "yt8m_pca_eigenvals.npy"  # beside this module
PCA_RGB_OFFSET = 4.0 / 512
PCA_SCALE_EPSILON = 1e-4


def pca_eigenvalues() -> np.ndarray:
    """The published eigenvalues of the PCA of YouTube-8M's rgb features (the project's
    copy of linrongc's ``yt8m_pca/eigenvals.npy``), float32 ``[2048]``."""
    with resources.files("yt8m.data").joinpath(EIGENVALUES_FILE).open("rb") as f:
        return np.load(f)[:, 0]


class PcaFrames(FrameTransform):
    """linrongc's input: ``(dequantize(x) * real - offset) * scale`` per channel.

    YouTube-8M's rgb features are PCA components divided by the square root of their
    eigenvalue; linrongc's train.py and eval.py multiply them back instead of
    L2-normalising: ``offset = 4/512`` on the rgb channels (the first feature) and 0 on
    the others, ``scale = sqrt(eigenvalue) + 1e-4`` on rgb (the first ``D`` eigenvalues for
    ``D`` rgb channels, at most 2048) and 1 on the others. Padding rows are zeroed after
    dequantizing, as the original's reader padded, so they come out as ``-offset * scale``.
    """

    def __init__(self, feature_sizes: Sequence[int]) -> None:
        super().__init__()
        rgb, width = feature_sizes[0], sum(feature_sizes)
        eigenvalues = pca_eigenvalues()
        if rgb > len(eigenvalues):
            raise YT8MError(
                f"--feature_sizes={','.join(map(str, feature_sizes))}: the PCA input scale has "
                f"{len(eigenvalues)} eigenvalues for the first feature (rgb), not {rgb}; "
                "use --nextvlad_input=willow"
            )
        offset = np.zeros(width, np.float32)
        offset[:rgb] = PCA_RGB_OFFSET
        scale = np.ones(width, np.float32)
        scale[:rgb] = np.sqrt(eigenvalues[:rgb]) + PCA_SCALE_EPSILON
        self.register_buffer("offset", torch.tensor(offset), persistent=False)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)

    def forward(self, parts: Sequence[torch.Tensor], real: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        keep = real.unsqueeze(-1)
        for part in parts:
            stop = start + part.shape[-1]
            x = dequantize(part).mul_(keep).sub_(self.offset[start:stop])
            out.append(x.mul_(self.scale[start:stop]))
            start = stop
        return out
