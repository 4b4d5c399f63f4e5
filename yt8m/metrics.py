"""Evaluation metrics of the original (fidelity.md §6): Hit@1, PERR, GAP and mAP.

Ranking rule, used everywhere in this project (metrics, submission files, averaging):
classes are ranked by confidence, highest first; equal confidences are ranked by
class index, smallest first (`ranks_before`). `top_k_per_row` implements it exactly, also
when a tie straddles the k-th place (a plain partition or torch.topk leaves that order
open). It reads a [B, C] float matrix once, in place (block maxima, in one compiled pass
per row), and ranks only the few entries that can reach the top k.

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

from yt8m.compiled import kernel, reordering_kernel
from yt8m.errors import YT8MError

if TYPE_CHECKING:  # torch is not imported at run time: averaging CSVs does not need it
    import torch

ArrayLike = Union["torch.Tensor", np.ndarray]
_BLOCK = 32  # columns per block of `_top_k_rows`
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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

    values: [B, C] (numpy, or a torch tensor on any device; float32 and float64 are read
    in place, other types as float64). Returns (top values [B, k'], their column indices
    [B, k'] int64) with k' = min(k, C), highest first, equal values in increasing column
    order. A row holding NaN gets NaN for all its top values.
    """
    values = as_numpy(values)
    if values.ndim != 2:
        raise MetricsError(f"expected a [videos, classes] matrix, got shape {values.shape}")
    if k <= 0:
        raise MetricsError(f"top_k must be positive, got {k}")
    if values.dtype not in _KERNEL_DTYPES:
        values = values.astype(np.float64)
    k = min(k, values.shape[1])
    top_values = np.empty((values.shape[0], k), values.dtype)
    top_columns = np.empty((values.shape[0], k), np.int64)
    if k:
        _top_k_rows(values, k, top_values, top_columns)
    return top_values, top_columns


@kernel
def ranks_before(value, index, other_value, other_index) -> bool:
    """The ranking rule: (value, index) comes before (other_value, other_index) when its
    value is higher, or equal with a smaller index."""
    return value > other_value or (value == other_value and index < other_index)


@kernel
def insert_ranked(value, index, held, best_values, best_indices) -> int:
    """Insert (value, index) into best_values / best_indices [k], which rank their first
    `held` entries, when it ranks among the k best; returns the entries now held."""
    k = best_values.size
    if held < k:
        held += 1
    elif not ranks_before(value, index, best_values[k - 1], best_indices[k - 1]):
        return held
    slot = held - 1
    while slot > 0 and ranks_before(value, index, best_values[slot - 1], best_indices[slot - 1]):
        best_values[slot] = best_values[slot - 1]
        best_indices[slot] = best_indices[slot - 1]
        slot -= 1
    best_values[slot] = value
    best_indices[slot] = index
    return held


@reordering_kernel
def _block_maximum(row, start, stop):
    """max(row[start:stop]) (stop > start) of a row without NaN, on vector instructions."""
    highest = row[start]
    for c in range(start + 1, stop):
        highest = max(highest, row[c])
    return highest


@kernel
def _holds_nan(row) -> bool:
    nans = 0
    for c in range(row.size):
        nans += row[c] != row[c]
    return nans > 0


@kernel
def _top_k_rows(values, k, top_values, top_columns):
    """`top_k_per_row` into top_values / top_columns [B, k] (1 <= k <= C).

    Per row, one read gives the maximum of each block of `_BLOCK` consecutive columns.
    The k-th highest block maximum t is at most the row's k-th highest value (the k
    highest block maxima are k distinct entries), so the row's top k, ties included, are
    among its entries >= t, which lie in the blocks whose maximum is >= t (usually k
    blocks, still in cache). Those entries are ranked by insertion, in column order.
    """
    rows, columns = values.shape
    blocks = (columns + _BLOCK - 1) // _BLOCK
    maxima = np.empty(blocks, values.dtype)
    kth = np.empty(k, values.dtype)
    kth_blocks = np.empty(k, np.int64)
    for r in range(rows):
        row = values[r]
        if blocks < 2 * k:  # few blocks: rank every entry
            held = 0
            for c in range(columns):
                held = insert_ranked(row[c], c, held, top_values[r], top_columns[r])
        else:
            _rank_block_candidates(row, maxima, kth, kth_blocks, top_values[r], top_columns[r])
        if _holds_nan(row):  # (read from cache) the ranking above means nothing then
            top_values[r] = np.nan
            top_columns[r] = np.arange(k)


@kernel
def _rank_block_candidates(row, maxima, kth, kth_blocks, best_values, best_columns):
    """The block path of `_top_k_rows` for one row without NaN: its k best into
    best_values / best_columns [k] (scratch: maxima [blocks], kth and kth_blocks [k])."""
    columns, blocks = row.size, maxima.size
    for b in range(blocks):
        maxima[b] = _block_maximum(row, b * _BLOCK, min(b * _BLOCK + _BLOCK, columns))
    found = 0
    for b in range(blocks):
        found = insert_ranked(maxima[b], b, found, kth, kth_blocks)
    threshold = kth[kth.size - 1]
    held = 0
    for b in range(blocks):
        if maxima[b] >= threshold:
            for c in range(b * _BLOCK, min(b * _BLOCK + _BLOCK, columns)):
                if row[c] >= threshold:
                    held = insert_ranked(row[c], c, held, best_values, best_columns)


def _nonzero_positions(labels: np.ndarray) -> np.ndarray:
    """Flat positions [N] of the nonzero entries of `labels` (C-contiguous), ascending.
    Bool labels are scanned 8 at a time (as uint64 words; few labels are set)."""
    if labels.dtype != np.bool_:
        return np.flatnonzero(labels)
    flat = labels.reshape(-1)
    whole = flat.size - flat.size % 8
    words = np.flatnonzero(flat[:whole].view(np.uint64) != 0)
    inside = np.flatnonzero(flat[:whole].reshape(-1, 8)[words])  # [words, 8] -> set bytes
    in_words = words[inside >> 3] * 8 + (inside & 7)
    return np.concatenate([in_words, whole + np.flatnonzero(flat[whole:])])


def first_nan_row(values: np.ndarray) -> int | None:
    """Index of the first row of `values` [B, C] holding a NaN, or None."""
    suspects = np.flatnonzero(np.isnan(values.sum(axis=1)))  # NaN (or inf - inf) somewhere
    for row in suspects.tolist():
        if np.isnan(values[row]).any():
            return row
    return None


def _monotone_codes(confidences: np.ndarray, dropped_bits: int) -> tuple[np.ndarray, bool]:
    """uint64 codes [N] in the order of the confidences [N] (float), without their
    `dropped_bits` low bits: equal confidences (also -0.0 and 0.0) get equal codes, a
    higher confidence a higher or equal code. Also returns whether the dropped bits were
    all zero (then the codes of different confidences differ: float32 values always)."""
    codes = np.add(confidences, 0.0, dtype=np.float64).view(np.uint64)  # -0.0 -> 0.0
    flip = (codes.view(np.int64) >> 63).view(np.uint64)  # all ones where negative
    flip |= np.uint64(1 << 63)
    codes ^= flip
    lossless = not (codes & np.uint64((1 << dropped_bits) - 1)).any()
    codes >>= np.uint64(dropped_bits)
    return codes, lossless


def _segment_sorted_keys(
    confidences: np.ndarray, relevant: np.ndarray, segments: np.ndarray, segment_bits: int
) -> np.ndarray:
    """Sorted uint64 keys [N]: segment (high bits), confidence code, relevant (low bit).

    The confidence code is `_monotone_codes` less its segment_bits + 1 low bits; when
    that merges two different confidences of one segment (possible for float64 values
    only), it is the confidences' dense rank instead.
    """
    codes, lossless = _monotone_codes(confidences, segment_bits + 1)
    keys = _pack_keys(codes, relevant, segments, segment_bits)
    if lossless or not np.any(keys[1:] >> np.uint64(1) == keys[:-1] >> np.uint64(1)):
        return keys
    ranks = np.unique(np.add(confidences, 0.0, dtype=np.float64), return_inverse=True)[1]
    return _pack_keys(ranks.astype(np.uint64), relevant, segments, segment_bits)


def _pack_keys(
    codes: np.ndarray, relevant: np.ndarray, segments: np.ndarray, segment_bits: int
) -> np.ndarray:
    keys = codes << np.uint64(1)
    keys |= relevant
    keys |= segments.astype(np.uint64) << np.uint64(64 - segment_bits)
    keys.sort()
    return keys


def _precision_sums(
    confidences: np.ndarray, relevant: np.ndarray, segments: np.ndarray | None, num_segments: int
) -> np.ndarray:
    """sum over relevant entries of precision, per segment (class), ranked by confidence.

    confidences, relevant: [N]; segments: [N] segment id in [0, num_segments) (None:
    one segment). A relevant entry of confidence c adds (relevant entries of its segment
    with confidence >= c) / (entries of its segment with confidence >= c): ties form one
    threshold (module docstring). Returns [num_segments] float64.
    """
    if segments is None:
        everything = np.sort(confidences)
        hits = np.sort(confidences[relevant])
        ranked = everything.size - np.searchsorted(everything, hits)
        found = hits.size - np.searchsorted(hits, hits)
        return np.array([np.sum(found / ranked)])
    segment_bits = max((num_segments - 1).bit_length(), 1)
    keys = _segment_sorted_keys(confidences, relevant, segments, segment_bits)
    hit_keys = keys[np.flatnonzero(keys & np.uint64(1))]
    segment_of = (hit_keys >> np.uint64(64 - segment_bits)).astype(np.intp)
    ends = np.cumsum(np.bincount(segments, minlength=num_segments))
    hit_ends = np.cumsum(np.bincount(segment_of, minlength=num_segments))
    ranked = ends[segment_of] - np.searchsorted(keys, hit_keys ^ np.uint64(1))
    found = hit_ends[segment_of] - np.searchsorted(hit_keys, hit_keys)
    return np.bincount(segment_of, weights=found / ranked, minlength=num_segments)


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
        label_rows, label_classes = np.divmod(_nonzero_positions(labels), self.num_classes)
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
    sums = _precision_sums(confidences, relevant, classes, positives.size)
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
