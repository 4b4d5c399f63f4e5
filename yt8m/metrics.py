"""Evaluation metrics of the original (fidelity.md §6): Hit@1, PERR, GAP and mAP.

Ranking rule, used everywhere in this project (metrics, submission files, averaging):
classes are ranked by confidence, highest first; equal confidences are ranked by
class index, smallest first. `top_k_per_row` implements it exactly, also when a tie
straddles the k-th place (a plain partition or torch.topk leaves that order open). It
reads a [B, C] float matrix once, in place (block maxima), and ranks only the few
entries that can reach the top k.

Ties in the pooled GAP / AP ranking: entries with equal confidence form one threshold
(the convention of scikit-learn's average precision): precision is taken after the
whole tied group, for every relevant entry of the group. The result does not depend on
the order of the videos. (The original shuffled with a fixed seed before sorting, so
its result on tied scores depended on that seed.) Without ties it is the usual
`sum_i precision(i) * rel(i) / positives`.

Memory of `EvaluationMetrics` grows with the kept top-k entries (top_k per video:
confidence, class index, relevance) plus one counter per class, never with
videos x classes: 1.4 M videos x 20 entries take about 0.4 GB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.lib.stride_tricks import as_strided

from yt8m.errors import YT8MError

if TYPE_CHECKING:  # torch is not imported at run time: averaging CSVs does not need it
    import torch

ArrayLike = Union["torch.Tensor", np.ndarray]
_BLOCK = 16  # columns per block of `_candidates`


class MetricsError(YT8MError, ValueError):
    """Predictions or labels that cannot be evaluated (shapes, NaN, no videos)."""


def as_numpy(values: ArrayLike) -> np.ndarray:
    """A C-contiguous numpy array of a tensor (any device) or array."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu()
        if not values.dtype.is_floating_point or values.dtype.itemsize >= 4:
            values = values.numpy()
        else:  # float16 / bfloat16
            values = values.float().numpy()
    return np.ascontiguousarray(values)


def top_k_per_row(values: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest entries of each row, ranked by the module's rule.

    values: [B, C] (numpy, or a torch tensor on any device; computed on the CPU without
    copying a numpy or CPU float matrix). Returns (top values [B, k'], their column
    indices [B, k'] int64) with k' = min(k, C), highest first, equal values in
    increasing column order. A row holding NaN gets NaN for all its top values.
    """
    values = as_numpy(values)
    if values.ndim != 2:
        raise MetricsError(f"expected a [videos, classes] matrix, got shape {values.shape}")
    if k <= 0:
        raise MetricsError(f"top_k must be positive, got {k}")
    k = min(k, values.shape[1])
    blocks = -(-values.shape[1] // _BLOCK)
    if values.dtype in (np.float32, np.float64) and blocks > 2 * k and values.shape[0]:
        rows, columns, candidates, nan_rows = _candidates(values, k)
    else:
        rows, columns = np.indices(values.shape).reshape(2, -1)
        candidates = values.ravel()
        nan_rows = np.isnan(values).any(axis=1) if values.dtype.kind == "f" else None
    top_values, top_indices = _rank_candidates(rows, columns, candidates, values.shape[0], k)
    if nan_rows is not None and nan_rows.any():
        top_values[nan_rows] = np.nan
    return top_values, top_indices


def _candidates(
    values: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries that may be among a row's k highest: (rows, columns, values) [N], row-major.

    With n = C // _BLOCK, block b of a row holds the columns b, b + n, b + 2n, ... < C;
    the block maxima are read in one pass over the matrix. The k-th highest block
    maximum t of a row is at most the row's k-th highest value, so the row's top k
    (ties included) are among its entries >= t, which lie in the blocks whose maximum
    is >= t. Also returns the rows holding NaN ([B] bool).
    """
    batch, num_classes = values.shape
    blocks = num_classes // _BLOCK
    strides = (values.strides[0], blocks * values.itemsize, values.itemsize)
    block_max = np.maximum.reduce(as_strided(values, (batch, _BLOCK, blocks), strides), axis=1)
    tail = values[:, blocks * _BLOCK :]  # fewer than `blocks` columns: one per first blocks
    np.maximum(block_max[:, : tail.shape[1]], tail, out=block_max[:, : tail.shape[1]])
    nan_rows = np.isnan(block_max).any(axis=1)
    threshold = np.partition(block_max, blocks - k, axis=1)[:, blocks - k]
    rows, block = np.nonzero(block_max >= threshold[:, None])
    columns = block[:, None] + blocks * np.arange(_BLOCK + 1)
    flat = (rows * num_classes)[:, None] + columns
    candidates = values.ravel().take(flat, mode="clip")
    keep = (columns < num_classes) & (candidates >= threshold[rows, None])
    flat = flat[keep]
    order = np.argsort(flat)
    rows, columns = np.divmod(flat[order], num_classes)
    return rows, columns, candidates[keep][order], nan_rows


def _rank_candidates(
    rows: np.ndarray, columns: np.ndarray, values: np.ndarray, batch: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k highest of each row's candidates, by the module's ranking rule.

    rows, columns, values [N] in row-major order; every row has at least k candidates.
    Returns (values [batch, k], columns [batch, k] int64), highest first.
    """
    counts = np.bincount(rows, minlength=batch)
    width = int(counts.max(initial=0))
    position = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    padded = np.full((batch, width), -np.inf, dtype=np.result_type(values.dtype, np.float32))
    padded[rows, position] = values
    np.negative(padded, out=padded)  # a stable ascending sort: highest first, then column
    padded_columns = np.zeros((batch, width), dtype=np.int64)
    padded_columns[rows, position] = columns
    order = np.argsort(padded, axis=1, kind="stable")[:, :k]
    return -np.take_along_axis(padded, order, axis=1), np.take_along_axis(
        padded_columns, order, axis=1
    )


def first_nan_row(values: np.ndarray) -> int | None:
    """Index of the first row of `values` [B, C] holding a NaN, or None."""
    suspects = np.flatnonzero(np.isnan(values.sum(axis=1)))  # NaN (or inf - inf) somewhere
    for row in suspects.tolist():
        if np.isnan(values[row]).any():
            return row
    return None


def _tie_group_ends(sorted_confidences: np.ndarray, segment_starts: np.ndarray) -> np.ndarray:
    """Last index of every run of equal confidences, runs also cut at `segment_starts`."""
    n = sorted_confidences.size
    is_end = np.ones(n, dtype=bool)
    is_end[:-1] = sorted_confidences[1:] != sorted_confidences[:-1]
    is_end[segment_starts[1:] - 1] = True
    return np.flatnonzero(is_end)


def _precision_sums(
    confidences: np.ndarray, relevant: np.ndarray, segments: np.ndarray | None, num_segments: int
) -> np.ndarray:
    """sum over relevant entries of precision, per segment (class), ranked by confidence.

    confidences, relevant: [N]; segments: [N] segment id (None: one segment).
    Returns [num_segments] float64.
    """
    if confidences.size == 0:
        return np.zeros(num_segments)
    order = np.argsort(confidences)[::-1]  # descending; order inside a tie does not matter
    if segments is not None:
        order = order[np.argsort(segments[order], kind="stable")]
        seg = segments[order]
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    else:
        seg = np.zeros(confidences.size, dtype=np.int64)
        starts = np.zeros(1, dtype=np.int64)
    conf = confidences[order]
    true_pos = np.cumsum(relevant[order], dtype=np.int64)
    ends = _tie_group_ends(conf, starts)
    start_of = starts[np.searchsorted(starts, ends, side="right") - 1]
    hits_so_far = true_pos[ends] - np.where(start_of > 0, true_pos[start_of - 1], 0)
    ranked_so_far = ends - start_of + 1
    hits_before = np.r_[0, hits_so_far[:-1]]
    hits_before[np.r_[True, seg[ends][1:] != seg[ends][:-1]]] = 0
    contribution = hits_so_far / ranked_so_far * (hits_so_far - hits_before)
    return np.bincount(seg[ends], weights=contribution, minlength=num_segments)


def pooled_average_precision(
    confidences: np.ndarray, relevant: np.ndarray, num_positives: int
) -> float:
    """AP of a pooled list: sum_i precision(i) * rel(i) / num_positives (ties: see module).

    confidences, relevant: [N]. num_positives counts every ground-truth label, also
    those absent from the list. Zero positives give 0.0 (as the original).
    """
    if num_positives <= 0:
        return 0.0
    return float(_precision_sums(confidences, relevant, None, 1)[0] / num_positives)


class EvaluationMetrics:
    """Hit@1, PERR, GAP and mAP accumulated over a whole split, batch by batch.

    `accumulate(predictions [B, C], labels [B, C])` keeps only each video's top_k
    entries; `get()` computes the split's metrics from them.
    """

    def __init__(self, num_classes: int, top_k: int = 20) -> None:
        if num_classes <= 0 or top_k <= 0:
            raise MetricsError(f"num_classes ({num_classes}) and top_k ({top_k}) must be positive")
        self.num_classes = num_classes
        self.top_k = top_k
        self.clear()

    def clear(self) -> None:
        """Forget everything accumulated."""
        self._confidences: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._relevant: list[np.ndarray] = []
        self._positives_per_class = np.zeros(self.num_classes, dtype=np.int64)
        self._num_videos = 0
        self._sum_hit_at_one = 0.0
        self._sum_perr = 0.0
        self._sum_loss = 0.0
        self._has_loss = False

    def accumulate(
        self,
        predictions: ArrayLike,
        labels: ArrayLike,
        loss: ArrayLike | float | None = None,
    ) -> dict[str, float]:
        """Add one batch; returns this batch's hit_at_one, perr, gap (and loss if given).

        predictions: [B, C] float (torch on any device, or numpy); labels: [B, C]
        bool or 0/1; loss: the batch's mean loss or per-video losses [B].
        """
        predictions, labels = as_numpy(predictions), as_numpy(labels)
        self._check_shapes(predictions, labels)
        batch = predictions.shape[0]
        label_rows, label_classes = np.divmod(np.flatnonzero(labels), self.num_classes)
        labels_per_video = np.bincount(label_rows, minlength=batch)
        positives = np.bincount(label_classes, minlength=self.num_classes)
        depth = max(self.top_k, int(labels_per_video.max(initial=0)))
        top_values, top_classes = top_k_per_row(predictions, depth)
        bad = first_nan_row(top_values)
        if bad is not None:
            raise MetricsError(f"the prediction for video {bad} of the batch holds NaN")
        top_relevant = labels[np.arange(batch)[:, None], top_classes] != 0

        hits = top_relevant[:, 0] if top_relevant.shape[1] else np.zeros(batch, dtype=bool)
        in_first_n = np.arange(top_values.shape[1]) < labels_per_video[:, None]
        perr_hits = np.count_nonzero(top_relevant & in_first_n & (top_values > 0), axis=1)
        perr = perr_hits / np.maximum(labels_per_video, 1)
        keep = min(self.top_k, top_values.shape[1])
        conf = top_values[:, :keep].ravel()
        relevant = top_relevant[:, :keep].ravel()
        classes = top_classes[:, :keep].ravel()

        self._confidences.append(conf)
        self._relevant.append(relevant)
        self._classes.append(classes.astype(np.int16 if self.num_classes < 2**15 else np.int32))
        self._positives_per_class += positives
        self._num_videos += batch
        batch_hit = float(np.count_nonzero(hits))
        batch_perr = float(perr.sum())
        self._sum_hit_at_one += batch_hit
        self._sum_perr += batch_perr
        result = {
            "hit_at_one": batch_hit / max(batch, 1),
            "perr": batch_perr / max(batch, 1),
            "gap": pooled_average_precision(conf, relevant, int(positives.sum())),
        }
        if loss is not None:
            mean_loss = float(np.mean(as_numpy(loss), dtype=np.float64))
            self._sum_loss += mean_loss * batch
            self._has_loss = True
            result["loss"] = mean_loss
        return result

    def _check_shapes(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        expected = (predictions.shape[0], self.num_classes)
        if predictions.ndim != 2 or predictions.shape != expected:
            raise MetricsError(
                f"predictions of shape {predictions.shape}, expected [videos, {self.num_classes}]"
            )
        if labels.shape != predictions.shape:
            raise MetricsError(
                f"labels of shape {labels.shape} do not match predictions {predictions.shape}"
            )

    def merge(self, other: EvaluationMetrics) -> None:
        """Add everything `other` accumulated (e.g. another rank's share of the split).

        Afterwards `get` gives the numbers of one object that saw both shares (the
        metrics do not depend on the order of the videos).
        """
        if (other.num_classes, other.top_k) != (self.num_classes, self.top_k):
            raise MetricsError(
                f"cannot merge metrics of {other.num_classes} classes, top_k {other.top_k} "
                f"into metrics of {self.num_classes} classes, top_k {self.top_k}"
            )
        self._confidences += other._confidences
        self._classes += other._classes
        self._relevant += other._relevant
        self._positives_per_class += other._positives_per_class
        self._num_videos += other._num_videos
        self._sum_hit_at_one += other._sum_hit_at_one
        self._sum_perr += other._sum_perr
        self._sum_loss += other._sum_loss
        self._has_loss |= other._has_loss

    def get(self) -> dict[str, float]:
        """Metrics over everything accumulated.

        Returns num_videos, hit_at_one, perr, gap, map (the original's: mean AP over
        all num_classes, a class without positives counting 0), map_positive_classes
        (later starter code: mean over the classes that have positives) and avg_loss
        (NaN when no loss was given).
        """
        if self._num_videos == 0:
            raise MetricsError("no videos were evaluated")
        conf = np.concatenate(self._confidences)
        relevant = np.concatenate(self._relevant)
        classes = np.concatenate(self._classes)
        positives = self._positives_per_class
        gap = pooled_average_precision(conf, relevant, int(positives.sum()))
        aps = _class_average_precisions(conf, relevant, classes, positives)
        has_positives = positives > 0
        return {
            "num_videos": self._num_videos,
            "hit_at_one": self._sum_hit_at_one / self._num_videos,
            "perr": self._sum_perr / self._num_videos,
            "gap": gap,
            "map": float(aps.mean()),
            "map_positive_classes": float(aps[has_positives].mean())
            if has_positives.any()
            else 0.0,
            "avg_loss": self._sum_loss / self._num_videos if self._has_loss else float("nan"),
        }


def _class_average_precisions(
    confidences: np.ndarray, relevant: np.ndarray, classes: np.ndarray, positives: np.ndarray
) -> np.ndarray:
    """Per-class AP over the pooled top-k entries of that class; [num_classes] float64."""
    sums = _precision_sums(confidences, relevant, classes.astype(np.int64), positives.size)
    return np.divide(sums, positives, out=np.zeros(positives.size), where=positives > 0)


def _whole(predictions: ArrayLike, labels: ArrayLike, top_k: int) -> dict[str, float]:
    labels = as_numpy(labels)
    metrics = EvaluationMetrics(labels.shape[1], top_k)
    metrics.accumulate(predictions, labels)
    return metrics.get()


def gap(predictions: ArrayLike, labels: ArrayLike, top_k: int = 20) -> float:
    """Global average precision of whole arrays: predictions [V, C], labels [V, C]."""
    return _whole(predictions, labels, top_k)["gap"]


def hit_at_one(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of videos whose top-ranked class is a true label; [V, C] inputs."""
    return _whole(predictions, labels, 1)["hit_at_one"]


def perr(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Precision at equal recall rate: per video with n labels, the fraction of its n
    top-ranked classes (with confidence > 0) that are true labels; 0 for a video
    without labels; averaged over videos. [V, C] inputs."""
    return _whole(predictions, labels, 1)["perr"]


def mean_average_precision(
    predictions: ArrayLike, labels: ArrayLike, top_k: int = 20, positive_classes_only: bool = False
) -> float:
    """mAP over the pooled top_k entries; mean over all classes (the original) or only
    over classes with positives (`positive_classes_only`, later starter code)."""
    result = _whole(predictions, labels, top_k)
    return result["map_positive_classes" if positive_classes_only else "map"]
