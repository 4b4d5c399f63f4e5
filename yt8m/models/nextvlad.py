"""NeXtVLAD and its mixture, as linrongc/youtube-8m builds them (successors.md §3).

Both read every row of the batch (no frame sampling): ``forward(inputs [B, T, D],
num_frames int64 [B], key=None) -> probabilities [B, num_classes]`` with
``inputs`` the loader's uint8 frames; each model applies its own input transform to all
rows (`yt8m.data.features.PcaFrames` by default, the WILLOW frames `WillowFrames` with
``transform="willow"``). The first feature (rgb) and the others together (audio) each
get a `NeXtVLAD` (audio: half the clusters and half the groups).

`MixNeXtVladModel` adds, in training mode, the on-the-fly distillation of its branches
to `regularization_loss()` and exposes the branches' own predictions through
`auxiliary_predictions()`; `yt8m.objective` adds a label loss for each, as linrongc's
train.py does with a model's ``aux_predictions``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from yt8m.data.features import FrameTransform, PcaFrames, WillowFrames, real_rows
from yt8m.errors import YT8MError
from yt8m.models.classifiers import ClassifierSpec, Logistic
from yt8m.models.gating import SEContextGating
from yt8m.models.layers import (
    Dense,
    HiddenLayer,
    batch_norm,
    l2_normalize,
    variance_scaling_parameter,
)
from yt8m.models.pooling import SoftAssignment, vlad_residuals

LOGISTIC = ClassifierSpec(name="LogisticModel")  # the classifier of linrongc's scripts
KL_EPSILON = 1e-8


class NeXtVLAD(nn.Module):
    """One modality: ``x [B, T, D]``, ``mask [B, T]`` (1 for real frames) ``-> [B, K*F]``
    with ``F = expansion * D / groups``.

    ``x' = x We + be`` (``[D, E*D]``); attention ``sigmoid(x' Wa + ba)`` (``[E*D, G]``)
    times the mask; ``a = softmax_K(BN(x' Wc))`` per group (``[E*D, G*K]``, statistics
    over all B*T rows) times the attention; ``V = sum_{t,g} a x'_{tg} - a_sum c`` with
    ``x'_{tg}`` group g's F channels and c ``[F, K]`` (the original's
    ``cluster_weights2`` ``[1, F, K]``); L2-normalise each cluster's F-vector, flatten
    (``f*K + k``), batch norm. Every weight is slim's variance scaling, biases 0.
    """

    def __init__(self, feature_size: int, cluster_size: int, expansion: int, groups: int) -> None:
        super().__init__()
        width = expansion * feature_size
        if groups < 1 or width % groups:
            raise YT8MError(
                f"NeXtVLAD of {feature_size} features: --groups={groups} must divide "
                f"--expansion x features = {width}"
            )
        self.groups = groups
        self.expand = Dense(feature_size, width)
        self.attention = Dense(width, groups)
        self.assignment = SoftAssignment(
            width, cluster_size, add_batch_norm=True, groups=groups, variance_scaling=True
        )
        self.centers = variance_scaling_parameter(width // groups, cluster_size)
        self.output_size = cluster_size * width // groups
        self.norm = batch_norm(self.output_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        rows = frames * self.groups
        x = self.expand(x)
        attention = torch.sigmoid(self.attention(x)) * mask.unsqueeze(-1)  # [B, T, G]
        a = self.assignment(x) * attention.view(batch, rows, 1)  # [B, T*G, K]
        v = vlad_residuals(x.view(batch, rows, -1), a, self.centers)  # [B, F, K]
        return self.norm(l2_normalize(v, dim=1).reshape(batch, -1))


class NeXtVLADBranch(nn.Module):
    """NeXtVLAD per modality, concatenated; dropout; hidden layer (no bias) + batch norm;
    SE context gating. ``parts`` (rgb ``[B, T, D_rgb]`` and, if any, audio
    ``[B, T, D_audio]``), ``mask [B, T] -> [B, hidden_size]``."""

    def __init__(
        self,
        feature_sizes: Sequence[int],
        cluster_size: int,
        hidden_size: int,
        groups: int,
        expansion: int,
        drop_rate: float,
        gating_reduction: int,
    ) -> None:
        super().__init__()
        video, audio = feature_sizes[0], sum(feature_sizes[1:])
        if audio and (groups < 2 or groups % 2):
            raise YT8MError(
                f"--groups={groups}: the audio NeXtVLAD takes half the groups; give an even "
                "--groups of at least 2"
            )
        if not 0 <= drop_rate < 1:
            raise YT8MError(f"--drop_rate={drop_rate}: expected a number in [0, 1)")
        if gating_reduction < 1 or hidden_size < gating_reduction:
            raise YT8MError(
                f"--gating_reduction={gating_reduction}: must be between 1 and "
                f"--nextvlad_hidden_size={hidden_size}"
            )
        self.video = NeXtVLAD(video, cluster_size, expansion, groups)
        self.audio = NeXtVLAD(audio, cluster_size // 2, expansion, groups // 2) if audio else None
        pooled = self.video.output_size + (self.audio.output_size if self.audio else 0)
        self.dropout = nn.Dropout(drop_rate)
        self.hidden = HiddenLayer(pooled, hidden_size, None, batch_norm=True, relu6=False)
        self.gating = SEContextGating(hidden_size, gating_reduction)

    def forward(self, parts: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        pooled = self.video(parts[0], mask)
        if self.audio is not None:
            pooled = torch.cat([pooled, self.audio(parts[1], mask)], dim=1)
        return self.gating(self.hidden(self.dropout(pooled)))


def input_transform(name: str, feature_sizes: Sequence[int]) -> FrameTransform:
    """``pca``: linrongc's input (`PcaFrames`); ``willow``: `WillowFrames`."""
    if name == "pca":
        return PcaFrames(feature_sizes)
    if name == "willow":
        return WillowFrames()
    raise YT8MError(f"--nextvlad_input={name!r}: expected 'pca' or 'willow'")


def _classifier(spec: ClassifierSpec, l2_penalty: float, size: int, classes: int) -> nn.Module:
    """linrongc's LogisticModel (variance scaling, bias penalised), or its MoeModel (the
    project's `MoE`: the same layers), both penalised by ``--l2_penalty``."""
    if spec.name == "LogisticModel":
        return Logistic(size, classes, l2_penalty, linrongc=True)
    return dataclasses.replace(spec, l2_penalty=l2_penalty).build(size, classes)


class _AllFramesModel(nn.Module):
    """The input transform and the mask of real frames, shared by both models."""

    def __init__(self, feature_sizes: Sequence[int], transform: str) -> None:
        super().__init__()
        self.input_transform = input_transform(transform, feature_sizes)
        self.video_size = feature_sizes[0]
        self.deterministic_sampling = False  # nothing is sampled; kept for the interface

    def prepare(
        self, inputs: torch.Tensor, num_frames: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``([rgb [B, T, D_rgb], audio [B, T, D - D_rgb]], mask [B, T])``: every row
        transformed, one part per branch (no full-width copy), in the weights' dtype
        (float32, or float64 in tests)."""
        real = real_rows(num_frames.to(inputs.device), inputs.shape[1])
        split = self.video_size
        parts = [inputs[..., :split], inputs[..., split:]] if inputs.shape[-1] > split else [inputs]
        dtype = next(self.parameters()).dtype
        return [p.to(dtype) for p in self.input_transform(parts, real)], real.to(dtype)


class NeXtVLADModel(_AllFramesModel):
    """linrongc's ``NeXtVLADModel``: one `NeXtVLADBranch`, then the classifier."""

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        cluster_size: int = 64,
        hidden_size: int = 1024,
        groups: int = 8,
        expansion: int = 2,
        drop_rate: float = 0.5,
        gating_reduction: int = 8,
        classifier: ClassifierSpec = LOGISTIC,
        l2_penalty: float = 1e-8,
        transform: str = "pca",
    ) -> None:
        super().__init__(feature_sizes, transform)
        self.branch = NeXtVLADBranch(
            feature_sizes, cluster_size, hidden_size, groups, expansion, drop_rate,
            gating_reduction,
        )  # fmt: skip
        self.classifier = _classifier(classifier, l2_penalty, hidden_size, num_classes)

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`key` (the sampling key) is accepted for the common interface: every row is read."""
        return self.classifier(self.branch(*self.prepare(inputs, num_frames)))

    def regularization_loss(self) -> torch.Tensor:
        """``l2_penalty * 0.5 * sum ||W||^2`` over the classifier's penalised weights."""
        return self.classifier.regularization_loss()


def mutual_distillation(mix_logit: torch.Tensor, logits: torch.Tensor, temperature: float):
    """linrongc's on-the-fly distillation term (before ``cl_lambda``): the batch mean of
    ``sum_i KL(softmax(mix_logit / T) || softmax(logit_i / T))``, softmax over the classes,
    each log taken of ``p + 1e-8``. ``mix_logit [B, C]``, ``logits [B, M, C]`` -> scalar.
    Gradients reach both sides, as in the original."""
    dtype = torch.promote_types(logits.dtype, torch.float32)  # not in bfloat16 under --amp
    target = torch.softmax(mix_logit.to(dtype) / temperature, dim=-1).unsqueeze(1)
    branches = torch.softmax(logits.to(dtype) / temperature, dim=-1)
    kl = (target * ((target + KL_EPSILON).log() - (branches + KL_EPSILON).log())).sum(-1)
    return kl.sum(-1).mean()


class MixNeXtVladModel(_AllFramesModel):
    """linrongc's ``MixNeXtVladModel``: `mix_number` branches, each a `NeXtVLADBranch` and
    a logistic classifier giving logits; mixture weights ``softmax(BN(mean_t x) Wm + bm)``
    (the mean over all T rows, padding included, as the original); prediction
    ``sigmoid(sum_i w_i logits_i)``.

    In training mode `regularization_loss()` adds ``cl_lambda * mutual_distillation(...)``
    of the last forward and `auxiliary_predictions()` gives ``sigmoid(logits_i)``.
    """

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        mix_number: int = 3,
        cl_temperature: float = 2.0,
        cl_lambda: float = 1.0,
        cluster_size: int = 64,
        hidden_size: int = 1024,
        groups: int = 8,
        expansion: int = 2,
        drop_rate: float = 0.5,
        gating_reduction: int = 8,
        classifier: ClassifierSpec = LOGISTIC,
        l2_penalty: float = 1e-8,
        transform: str = "pca",
    ) -> None:
        super().__init__(feature_sizes, transform)
        if classifier.name != "LogisticModel":
            raise YT8MError(
                f"--model=MixNeXtVladModel mixes logits: it needs "
                f"--video_level_classifier_model=LogisticModel, not {classifier.name}"
            )
        if mix_number < 1:
            raise YT8MError(f"--mix_number={mix_number}: needs at least 1 branch")
        if cl_temperature <= 0:
            raise YT8MError(f"--cl_temperature={cl_temperature}: must be positive")
        width = sum(feature_sizes)
        self.mix_norm = batch_norm(width)
        self.mix_weights = Dense(width, mix_number)
        self.branches = nn.ModuleList(
            NeXtVLADBranch(
                feature_sizes,
                cluster_size,
                hidden_size,
                groups,
                expansion,
                drop_rate,
                gating_reduction,
            )  # fmt: skip
            for _ in range(mix_number)
        )
        self.classifiers = nn.ModuleList(
            Logistic(hidden_size, num_classes, l2_penalty, linrongc=True) for _ in range(mix_number)
        )
        self.cl_temperature = cl_temperature
        self.cl_lambda = cl_lambda
        self.training_logits: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts, mask = self.prepare(inputs, num_frames)
        mean = torch.cat([part.mean(1) for part in parts], dim=1)  # every row, as the original
        weights = torch.softmax(self.mix_weights(self.mix_norm(mean)), dim=-1)  # [B, M]
        logits = torch.stack(
            [
                classifier.logits(branch(parts, mask))
                for branch, classifier in zip(self.branches, self.classifiers, strict=True)
            ],
            dim=1,
        )  # [B, M, C]
        mix_logit = (weights.unsqueeze(-1) * logits).sum(1)
        self.training_logits = (mix_logit, logits) if self.training else None
        return torch.sigmoid(mix_logit)

    def auxiliary_predictions(self) -> list[torch.Tensor]:
        """Each branch's ``sigmoid(logits_i)`` of the last training forward (else none)."""
        if self.training_logits is None:
            return []
        return list(torch.sigmoid(self.training_logits[1]).unbind(1))

    def regularization_loss(self) -> torch.Tensor:
        """The classifiers' L2 terms, plus ``cl_lambda * mutual_distillation`` after a
        training forward."""
        loss = sum(classifier.regularization_loss() for classifier in self.classifiers)
        if self.training_logits is not None:
            mix_logit, logits = self.training_logits
            loss = loss + self.cl_lambda * mutual_distillation(
                mix_logit, logits, self.cl_temperature
            )
        return loss
