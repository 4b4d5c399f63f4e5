"""Video-level models: one feature vector per video (fidelity.md §4).

``forward(inputs [B, D], num_frames [B], key=None) -> probabilities [B, num_classes]``
with ``inputs`` the loader's float32 features, L2-normalised first by the model's
``input_transform`` (`yt8m.data.features.L2Features`, fidelity.md §2); `num_frames` and
`key` are accepted for the common interface and unused.
"""

from __future__ import annotations

import torch
from torch import nn

from yt8m.data.features import L2Features
from yt8m.models.classifiers import Logistic, MoE


class VideoLevelModel(nn.Module):
    """A classifier applied to the video's L2-normalised features."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.input_transform = L2Features()
        self.classifier = classifier
        self.deterministic_sampling = False  # nothing is sampled; kept for the interface

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor | None = None,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.classifier(self.input_transform(inputs))

    def regularization_loss(self) -> torch.Tensor:
        """``l2 * 0.5 * sum ||W||^2`` over the classifier's weights."""
        return self.classifier.regularization_loss()


class LogisticModel(VideoLevelModel):
    """The starter's logistic regression, L2 penalty 1e-8 on its weights."""

    def __init__(self, num_classes: int, feature_size: int = 1152, l2_penalty: float = 1e-8):
        super().__init__(Logistic(feature_size, num_classes, l2_penalty))


class MoeModel(VideoLevelModel):
    """WILLOW's mixture of experts (see `classifiers.MoE` for the arguments)."""

    def __init__(
        self,
        num_classes: int,
        feature_size: int = 1152,
        *,
        num_mixtures: int = 2,
        l2_penalty: float = 1e-8,
        low_rank_gating: int = -1,
        prob_gating: bool = False,
        prob_gating_input: str = "prob",
        remove_diag: bool = False,
    ) -> None:
        super().__init__(
            MoE(
                feature_size,
                num_classes,
                num_mixtures=num_mixtures,
                l2_penalty=l2_penalty,
                low_rank_gating=low_rank_gating,
                prob_gating=prob_gating,
                prob_gating_input=prob_gating_input,
                remove_diag=remove_diag,
            )
        )
