"""MAP@K of the 2019 segment task, as successors.md §2 defines it (Kaggle MAP@100K).

For one class, the submitted segments in rank order are reduced to relevance codes:
`POSITIVE` (a rated pair of that class with score > 0), `NEGATIVE` (rated, score 0) or
`UNRATED` (neither). The list is capped at K entries, the unrated entries are dropped
(the order of the rest is kept), and the average precision is the precision at each
remaining positive (1-based rank over the kept list) summed, divided by the number of
rated positives the class has in the whole ground truth (positives the list misses still
count). MAP@K is the mean over the submitted classes that have at least one positive;
a submitted class without positives is not counted.

The precision at the j-th kept positive of rank r_j is j / r_j, so a class costs one pass
over its codes and one sum over its positives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from yt8m.segments.errors import SegmentError

UNRATED, NEGATIVE, POSITIVE = -1, 0, 1


@dataclass(frozen=True)
class ClassScore:
    """What one class's capped list found: the sum of the precisions at its positives,
    the rated pairs and the positive pairs in it."""

    precision_sum: float
    rated: int
    positives: int


def score_codes(codes: np.ndarray, k: int) -> ClassScore:
    """One class's list: `codes` int8 ``[N]`` (`POSITIVE`/`NEGATIVE`/`UNRATED`) in rank
    order, capped at `k` entries (``k <= 0``: no cap)."""
    ranked = codes[:k] if k > 0 else codes
    kept = ranked[ranked != UNRATED]
    ranks = np.flatnonzero(kept == POSITIVE) + 1.0
    found = np.arange(1.0, len(ranks) + 1.0)
    return ClassScore(float(np.sum(found / ranks)), len(kept), len(ranks))


@dataclass(frozen=True)
class MapResult:
    """MAP@K and what it was computed from.

    map: the mean AP over `classes`, the submitted classes with positives.
    classes_without_positives: submitted classes that have no rated positive (not counted).
    rated_pairs, positive_pairs: the rated (segment, class) pairs, and the positive ones,
    found in the capped lists of all submitted classes.
    """

    map: float
    classes: int
    classes_without_positives: int
    rated_pairs: int
    positive_pairs: int

    def as_dict(self, k: int) -> dict[str, float | int]:
        """The numbers under the names `yt8m eval` and `yt8m score-segments` report."""
        return {
            f"segment_map_at_{k}": self.map,
            "segment_classes": self.classes,
            "segment_classes_without_positives": self.classes_without_positives,
            "segment_rated_pairs_found": self.rated_pairs,
            "segment_positive_pairs_found": self.positive_pairs,
        }


def mean_average_precision(
    scores: Iterable[tuple[int, ClassScore]], positives: np.ndarray, where: str
) -> MapResult:
    """MAP over the submitted classes: `scores` yields ``(class, ClassScore)`` once per
    submitted class; `positives` int64 ``[num_classes]``: each class's rated positives in
    the ground truth. `where` names the data in the error raised when no submitted class
    has a positive (MAP is then undefined)."""
    aps, without, rated, found = [], 0, 0, 0
    for label, score in scores:
        rated += score.rated
        found += score.positives
        total = int(positives[label]) if 0 <= label < len(positives) else 0
        if total == 0:
            without += 1
        else:
            aps.append(score.precision_sum / total)
    if not aps:
        raise SegmentError(
            f"no submitted class has a rated positive in {where}: MAP is undefined "
            "(is it the rated data of this submission's classes?)"
        )
    return MapResult(float(np.mean(aps)), len(aps), without, rated, found)
