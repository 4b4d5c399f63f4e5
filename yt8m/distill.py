"""Distilling teachers into one model: ``yt8m train --distill_from=T1,T2,...``.

Each teacher is either a prediction file (``VideoId,LabelConfidencePairs``, optionally
``.gz``, as `yt8m infer` or `yt8m average` write them with ``--top_k`` = the number of
classes: every line must list every class) holding every training video, or a train_dir
whose latest checkpoint is run on each batch (evaluation mode, no gradient). The soft
target of a video is the mean of its teachers' probabilities.

The student's label loss becomes (as miha-skalic/youtube8mchallenge's
``MixedCrossEntropyLoss``; successors.md §3)::

    (1 - w) * label_loss(p, labels) + w * T^2 * CE(p_T, t_T)

with ``w = --distill_weight``, CE the per-video sum over classes of the binary cross
entropy ``-(t log(p + 1e-5) + (1 - t) log(1 - p + 1e-5))`` averaged over the batch, and,
for a temperature ``T = --distill_temperature`` other than 1, both probabilities softened
as ``sigmoid(logit(q) / T)``.

Files are read once into memory: 4 bytes per video and class (the 2018 training set,
3.9 M videos x 3862 classes, would need 60 GB: use teacher checkpoints there).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yt8m.checkpoint import find_checkpoint, load_checkpoint
from yt8m.ema import prediction_state
from yt8m.errors import YT8MError
from yt8m.flags import Flags
from yt8m.models.registry import build_model
from yt8m.models.sampling import step_key
from yt8m.submission import read_submission_chunks

log = logging.getLogger(__name__)

EPSILON = 1e-5  # WILLOW's cross-entropy epsilon
LOGIT_CLAMP = 1e-6


class DistillationError(YT8MError):
    """Teachers that cannot give soft targets: incomplete files, unknown videos."""


class PredictionTable:
    """Every video's probabilities from prediction files, summed over the files.

    ``rows[video_id]`` indexes ``sums`` (float32 ``[videos, num_classes]``).
    """

    def __init__(self, paths: list[str], num_classes: int) -> None:
        self.paths = paths
        self.rows: dict[str, int] = {}
        self.sums = np.zeros((0, num_classes), np.float32)
        for number, path in enumerate(paths):
            self._add(path, num_classes, first=number == 0)

    def _add(self, path: str, num_classes: int, first: bool) -> None:
        seen = 0
        parts = []
        for chunk in read_submission_chunks(path):
            short = np.flatnonzero(chunk.pair_counts != num_classes)
            if len(short):
                line = chunk.first_line + int(short[0])
                raise DistillationError(
                    f"{path}:{line}: video {chunk.video_ids[short[0]]} has "
                    f"{chunk.pair_counts[short[0]]} label/confidence pairs; distillation needs "
                    f"all {num_classes} classes (write the teacher's predictions with "
                    f"--top_k={num_classes})"
                )
            labels = chunk.labels.reshape(-1, num_classes)
            if labels.size and (labels.max() >= num_classes):
                raise DistillationError(
                    f"{path}: label {labels.max()} is not below --num_classes={num_classes}"
                )
            probabilities = np.zeros(labels.shape, np.float32)
            np.put_along_axis(probabilities, labels, chunk.confidences.reshape(labels.shape), 1)
            ids = chunk.video_ids
            if first:
                for video_id in ids:
                    if video_id in self.rows:
                        raise DistillationError(f"{path}: video {video_id} appears twice")
                    self.rows[video_id] = len(self.rows)
                parts.append(probabilities)
            else:
                try:
                    index = np.fromiter((self.rows[v] for v in ids), np.int64, len(ids))
                except KeyError as err:
                    raise DistillationError(
                        f"{path}: video {err.args[0]} is not in {self.paths[0]}: the teachers "
                        "must predict the same videos"
                    ) from None
                self.sums[index] += probabilities
            seen += len(ids)
        if first:
            self.sums = np.concatenate(parts) if parts else self.sums
        elif seen != len(self.rows):
            raise DistillationError(
                f"{path} has {seen} videos, {self.paths[0]} {len(self.rows)}: the teachers "
                "must predict the same videos"
            )
        log.info("soft targets: %d videos from %s", seen, path)

    def lookup(self, video_ids: list[str]) -> torch.Tensor:
        """float32 ``[B, num_classes]`` sums of the files for these videos."""
        try:
            index = [self.rows[v] for v in video_ids]
        except KeyError as err:
            raise DistillationError(
                f"training video {err.args[0]} is not in the teachers' prediction files "
                f"({', '.join(self.paths)}): predict the whole training split"
            ) from None
        return torch.from_numpy(self.sums[index])


def _load_teacher(train_dir: str, flags: Flags, device: torch.device) -> nn.Module:
    checkpoint = load_checkpoint(find_checkpoint(train_dir))
    saved = checkpoint.flags
    if (saved.frame_features, saved.feature_list(), saved.num_classes) != (
        flags.frame_features,
        flags.feature_list(),
        flags.num_classes,
    ):
        raise DistillationError(
            f"teacher {checkpoint.path} was trained on other inputs or classes than the "
            "student's (--frame_features, --feature_names, --feature_sizes, --num_classes)"
        )
    teacher = build_model(saved)
    teacher.load_state_dict(prediction_state(checkpoint, flags.use_ema))  # as eval would
    log.info("teacher %s (step %d, %s)", checkpoint.path, checkpoint.step, saved.model)
    return teacher.to(device).eval().requires_grad_(False)


class SoftTargets:
    """The teachers of ``--distill_from``; called on a batch, their mean probabilities."""

    def __init__(self, flags: Flags, device: torch.device) -> None:
        sources = [s.strip() for s in flags.distill_from.split(",") if s.strip()]
        directories = [s for s in sources if Path(s).is_dir()]
        files = [s for s in sources if s not in directories]
        self.table = PredictionTable(files, flags.num_classes) if files else None
        self.teachers = [_load_teacher(d, flags, device) for d in directories]
        self.count = len(sources)
        self.weight = flags.distill_weight
        self.temperature = flags.distill_temperature
        if not 0 <= self.weight <= 1:
            raise DistillationError(f"--distill_weight={self.weight}: expected a number in [0, 1]")
        if self.temperature <= 0:
            raise DistillationError(f"--distill_temperature={self.temperature}: must be positive")

    @torch.no_grad()
    def __call__(
        self,
        video_ids: list[str],
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None,
    ) -> torch.Tensor:
        """float32 ``[B, num_classes]`` on the inputs' device. Teachers sample their frames
        with a key of their own made from the step's sampling `key` (``step_key(key, 1)``:
        a resumed run draws the same; None: random)."""
        total = None
        if self.table is not None:
            total = self.table.lookup(video_ids).to(inputs.device, non_blocking=True)
        if self.teachers:
            teacher_key = step_key(key, 1) if key is not None else None
            for teacher in self.teachers:
                p = teacher(inputs, num_frames, teacher_key).float()
                total = p if total is None else total + p
        return total / self.count

    def loss(
        self, hard_loss: torch.Tensor, predictions: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``(1 - w) * hard_loss + w * soft_target_loss(predictions, targets, T)``."""
        soft = soft_target_loss(predictions, targets, self.temperature)
        return (1 - self.weight) * hard_loss + self.weight * soft


def _soften(p: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 1:
        return p
    return torch.sigmoid(torch.logit(p, eps=LOGIT_CLAMP) / temperature)


def soft_target_loss(
    predictions: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``T^2`` times the batch mean of ``sum_c -(t log(p + 1e-5) + (1 - t) log(1 - p + 1e-5))``
    for probabilities ``p`` (student) and ``t`` (teachers), both softened by `temperature`.
    ``[B, C], [B, C] -> scalar``."""
    p = _soften(predictions.float(), temperature)
    t = _soften(targets.float(), temperature)
    per_class = t * torch.log(p + EPSILON) + (1 - t) * torch.log(1 - p + EPSILON)
    return -per_class.sum(1).mean() * temperature**2
