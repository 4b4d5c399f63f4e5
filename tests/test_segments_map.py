"""MAP@K of the segment task (successors.md §2): hand-worked cases and a brute force."""

import math

import numpy as np
import pytest

from yt8m.segments.errors import SegmentError
from yt8m.segments.map_at_k import (
    NEGATIVE,
    POSITIVE,
    UNRATED,
    mean_average_precision,
    score_codes,
)

P, N, U = POSITIVE, NEGATIVE, UNRATED


def codes(*values):
    return np.array(values, np.int8)


def ap(values, positives, k=0):
    score = score_codes(codes(*values), k)
    return score.precision_sum / positives


def test_unrated_pairs_are_dropped_before_ranks_are_counted():
    """§2: unrated pairs are dropped, the order kept; precision over the kept list."""
    # kept list: P N P -> (1/1 + 2/3) / 2 positives
    assert ap([U, P, U, U, N, P, U], 2) == pytest.approx((1 + 2 / 3) / 2)
    # the same list without the unrated entries scores the same
    assert ap([P, N, P], 2) == ap([U, P, U, U, N, P, U], 2)


def test_positives_missing_from_the_list_still_count_in_the_denominator():
    """§2: positives = all rated positives of the class, found or not."""
    assert ap([P, N], 5) == pytest.approx(1 / 5)
    assert ap([N, N, U], 3) == 0.0


def test_the_cap_applies_to_the_submitted_list_before_unrated_pairs_are_dropped():
    """§2: capped at --top_n first, so unrated entries use up places of the cap."""
    values = [U, U, P, P]
    assert ap(values, 2, k=3) == pytest.approx(1 / 2)  # only the first P is within 3
    assert ap(values, 2, k=4) == pytest.approx(1.0)
    assert ap(values, 2, k=0) == pytest.approx(1.0)  # 0: no cap
    assert ap(values, 2, k=2) == 0.0


def test_counts_of_rated_and_positive_pairs_found():
    score = score_codes(codes(P, U, N, P, U, N), 5)
    assert (score.rated, score.positives) == (3, 2)


def test_classes_without_positives_are_not_counted_in_the_mean():
    """§2: the mean over submitted classes with at least one positive."""
    positives = np.array([2, 0, 1, 4])
    scores = [
        (0, score_codes(codes(P, P), 0)),  # AP 1
        (1, score_codes(codes(N, N), 0)),  # no positives anywhere: not counted
        (2, score_codes(codes(N, P), 0)),  # AP 1/2
    ]  # class 3 not submitted: not counted
    result = mean_average_precision(scores, positives, "data")
    assert result.map == pytest.approx(0.75)
    assert (result.classes, result.classes_without_positives) == (2, 1)
    assert (result.rated_pairs, result.positive_pairs) == (6, 3)


def test_a_class_outside_the_ground_truth_counts_as_without_positives():
    result = mean_average_precision(
        [(0, score_codes(codes(P), 0)), (9, score_codes(codes(U), 0))], np.array([1]), "data"
    )
    assert (result.map, result.classes, result.classes_without_positives) == (1.0, 1, 1)


def test_no_class_with_positives_is_an_error_naming_the_data():
    with pytest.raises(SegmentError, match="no submitted class has a rated positive in DATA"):
        mean_average_precision([(1, score_codes(codes(N), 0))], np.array([3, 0]), "DATA")


def brute_force_ap(values, positives, k):
    """successors.md §2 written out: cap, drop unrated, walk the list."""
    ranked = list(values[:k]) if k else list(values)
    kept = [v for v in ranked if v != U]
    hits, total = 0, 0.0
    for i, v in enumerate(kept, start=1):
        if v == P:
            hits += 1
            total += hits / i
    return total / positives


def test_against_a_brute_force_on_random_lists():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 60))
        values = rng.choice([P, N, U], size=n, p=[0.3, 0.3, 0.4]).astype(np.int8)
        positives = int((values == P).sum() + rng.integers(0, 4)) or 1
        k = int(rng.integers(0, n + 3))
        got = score_codes(values, k).precision_sum / positives
        assert math.isclose(got, brute_force_ap(values, positives, k), rel_tol=1e-12, abs_tol=0)
