"""linrongc's NeXtVLAD input (successors.md §3): ``(dequantized - offset) * scale``.

YouTube-8M's rgb features are PCA components divided by the square root of their
eigenvalue; linrongc's train.py and eval.py multiply them back by it instead of
L2-normalising the frames: per channel ``offset = 4/512`` on the rgb channels (the first
feature) and 0 on the others, ``scale = sqrt(eigenvalue) + 1e-4`` on rgb and 1 on the
others. The eigenvalues are the project's own copy of the published ones
(``yt8m_pca_eigenvals.npy`` beside this module, ``[2048, 1]`` float32; the first ``D``
are used for ``D`` rgb channels).

Frames are dequantized and padding rows (``t >= num_frames``) set to 0 before the
transform, as the original's reader padded after dequantizing: so a padding row comes out
as ``-offset * scale``, not 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch
from torch import nn

from yt8m.data.features import dequantize
from yt8m.errors import YT8MError

EIGENVALUES_FILE = "yt8m_pca_eigenvals.npy"
RGB_OFFSET = 4.0 / 512
SCALE_EPSILON = 1e-4


def pca_eigenvalues() -> np.ndarray:
    """The published eigenvalues of YouTube-8M's rgb PCA, float32 ``[2048]``."""
    with resources.files("yt8m.data").joinpath(EIGENVALUES_FILE).open("rb") as f:
        return np.load(f)[:, 0]


class PcaScaledInput(nn.Module):
    """``inputs uint8 [B, T, D], num_frames int64 [B] -> float32 [B, T, D]``:
    ``(dequantize(x) * real_row - offset) * scale``.

    `feature_sizes`: the concatenated features, the first being rgb (at most 2048
    channels). Float frames are taken as already dequantized (padding rows still zeroed).
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
        offset[:rgb] = RGB_OFFSET
        scale = np.ones(width, np.float32)
        scale[:rgb] = np.sqrt(eigenvalues[:rgb]) + SCALE_EPSILON
        self.register_buffer("offset", torch.tensor(offset), persistent=False)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)

    def forward(self, inputs: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        frames = dequantize(inputs) if inputs.dtype == torch.uint8 else inputs.float()
        steps = torch.arange(frames.shape[1], device=frames.device)
        real = steps.unsqueeze(0) < num_frames.to(frames.device).unsqueeze(1)
        return (frames * real.unsqueeze(-1) - self.offset) * self.scale
