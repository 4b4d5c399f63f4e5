"""The best K segments of every class over a stream of scores, in memory bounded by K.

`TopKPerClass` reads chunks of scores ``[N, W]`` (N segments, W classes) with one int64
id per segment, and keeps, per class, the K best ``(score, id)``: higher score first,
equal scores by smaller id (the reader gives ids in reading order, so the segment read
first wins a tie). Each entry is one int64 key, smaller is better:
``key = rank_code(score) << 31 | id`` (`rank_code` maps float32 scores to 32-bit codes in
decreasing order), so ranking is integer comparison and ids need no second array.

Per class, a buffer of ``K + K/4`` keys fills with every entry that beats the class's
threshold (one compiled pass over each chunk); when it is full the pass stops, the buffer
is cut back to its K best (numpy's partition, in place) and the threshold becomes the K-th
best key, which only rises. Memory: ``W x 1.25 K`` int64 (1,000 classes
x 100,000: 1.0 GB) whatever the stream's length; the cost per score is one comparison,
and a random stream of n segments refills a class about ``1 + ln(n / K)`` times K.

`merge` combines the selections of several processes (torchrun ranks) whose ids were
shifted into disjoint ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yt8m.compiled import kernel
from yt8m.segments.errors import SegmentError

ID_BITS = 31
MAX_ID = (1 << ID_BITS) - 1
_NO_THRESHOLD = np.iinfo(np.int64).max
_DONE, _NAN, _FULL = 0, 1, 2


@kernel
def _select(bits, ids, keys, counts, thresholds, row, column):  # pragma: no cover - compiled
    """Offer the rows of `bits` (uint32 views of float32 scores [N, W]) with `ids` [N],
    from (row, column) on. Returns (`_DONE`, N, 0); (`_NAN`, row, column) at a NaN; or
    (`_FULL`, row, column) when that entry filled its class's buffer (the caller cuts
    the buffer back and resumes after it)."""
    rows, columns = bits.shape
    cap = keys.shape[1]
    while row < rows:
        ident = ids[row]
        while column < columns:
            value = np.int64(bits[row, column])
            if (value & 0x7FFFFFFF) > 0x7F800000:
                return _NAN, row, column
            code = value if value >= 0x80000000 else 0x7FFFFFFF - value
            key = (code << 31) | ident
            if key < thresholds[column]:
                count = counts[column]
                keys[column, count] = key
                counts[column] = count + 1
                if count + 1 == cap:
                    return _FULL, row, column
            column += 1
        row += 1
        column = 0
    return _DONE, rows, 0


def score_keys(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The keys of float32 `scores` with int64 `ids` (same shape): the ranking order."""
    value = np.ascontiguousarray(scores, np.float32).view(np.uint32).astype(np.int64)
    code = np.where(value >= 0x80000000, value, 0x7FFFFFFF - value)
    return (code << ID_BITS) | ids


def key_ids(keys: np.ndarray) -> np.ndarray:
    """The ids (int64) of `keys`."""
    return keys & MAX_ID


def key_scores(keys: np.ndarray) -> np.ndarray:
    """The float32 scores of `keys`."""
    code = keys >> ID_BITS
    value = np.where(code >= 0x80000000, code, 0x7FFFFFFF - code)
    return value.astype(np.uint32).view(np.float32)


@dataclass
class Selection:
    """Per class the kept keys, best first: class ``c`` (its position among the W
    columns) has ``keys[c, :counts[c]]``."""

    keys: np.ndarray  # int64 [W, >= max(counts)]
    counts: np.ndarray  # int64 [W]

    def column(self, c: int) -> np.ndarray:
        return self.keys[c, : self.counts[c]]

    @property
    def columns(self) -> int:
        return len(self.counts)


class TopKPerClass:
    """Streaming selection of the best `k` entries of each of `columns` classes."""

    def __init__(self, columns: int, k: int) -> None:
        if k < 1:
            raise SegmentError(f"--segment_max_pred={k}: keep at least 1 segment per class")
        self.k = k
        self.cap = k + max(k // 4, 1)
        self.keys = np.empty((columns, self.cap), np.int64)
        self.counts = np.zeros(columns, np.int64)
        self.thresholds = np.full(columns, _NO_THRESHOLD, np.int64)

    def add(self, scores: np.ndarray, ids: np.ndarray, names: list[str] | None = None) -> None:
        """Offer float32 `scores` ``[N, W]`` of the segments `ids` (int64 ``[N]``, each in
        ``0..MAX_ID``). A NaN score is an error naming the segment (``names[row]``, or
        its id)."""
        scores = np.ascontiguousarray(scores, np.float32)
        ids = np.ascontiguousarray(ids, np.int64)
        if scores.ndim != 2 or scores.shape != (len(ids), self.keys.shape[0]):
            raise ValueError(f"scores {scores.shape} for {len(ids)} ids x {self.keys.shape[0]}")
        if len(ids) and (ids.min() < 0 or ids.max() > MAX_ID):
            raise SegmentError(f"segment ids must lie in 0..{MAX_ID}; got {ids.min()}..{ids.max()}")
        bits = scores.view(np.uint32)
        row = column = 0
        while True:
            status, row, column = _select(
                bits, ids, self.keys, self.counts, self.thresholds, row, column
            )
            if status == _DONE:
                return
            if status == _NAN:
                name = names[row] if names is not None else int(ids[row])
                raise SegmentError(f"the scores of segment {name} hold NaN")
            self._cut(column)
            row, column = (row, column + 1) if column + 1 < bits.shape[1] else (row + 1, 0)

    def _cut(self, column: int) -> None:
        """Cut a full buffer back to its k best (numpy's partition, in place); the k-th
        best becomes the class's threshold."""
        kept = self.keys[column]
        kept.partition(self.k - 1)
        self.counts[column] = self.k
        self.thresholds[column] = kept[self.k - 1]

    def result(self) -> Selection:
        """The kept keys of every class, best first, sorted in place (no copy of the
        buffers; the selector takes no more scores after this)."""
        for c in range(len(self.counts)):
            kept = self.keys[c, : self.counts[c]]
            if len(kept) > self.k:
                kept = np.partition(kept, self.k - 1)[: self.k]
            self.keys[c, : len(kept)] = np.sort(kept)
            self.counts[c] = len(kept)
        self.thresholds[:] = -1  # closed: any further entry would be dropped
        return Selection(self.keys, self.counts)


def merge(selections: list[Selection], id_offsets: list[int], k: int) -> Selection:
    """One selection of the best `k` per class out of `selections` (one per process, the
    same classes), the ids of selection i shifted up by ``id_offsets[i]``: with
    increasing offsets and disjoint ranges, equal scores rank process 0's segments first."""
    for selection, offset in zip(selections, id_offsets, strict=True):
        largest = max(
            (int(key_ids(selection.column(c)).max(initial=0)) for c in range(selection.columns)),
            default=0,
        )
        if offset < 0 or largest + offset > MAX_ID:
            raise SegmentError(f"merged segment ids exceed {MAX_ID}: too many segments")
    columns = selections[0].columns
    keys = np.empty((columns, k), np.int64)
    counts = np.zeros(columns, np.int64)
    for c in range(columns):
        joined = np.concatenate(
            [s.column(c) + offset for s, offset in zip(selections, id_offsets, strict=True)]
        )
        if len(joined) > k:
            joined = np.partition(joined, k - 1)[:k]
        keys[c, : len(joined)] = np.sort(joined)
        counts[c] = len(joined)
    return Selection(keys, counts)
