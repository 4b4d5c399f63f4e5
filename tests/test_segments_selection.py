"""Streaming top-K per class (successors.md §2: the best --segment_max_pred per class)."""

import numpy as np
import pytest

from yt8m.segments.errors import SegmentError
from yt8m.segments.selection import (
    MAX_ID,
    TopKPerClass,
    key_ids,
    key_scores,
    merge,
    score_keys,
)


def full_sort(scores, ids, k):
    """Per class: every (score, id), sorted by score descending then id ascending, first k."""
    result = []
    for c in range(scores.shape[1]):
        order = np.lexsort((ids, -scores[:, c].astype(np.float64)))[:k]
        result.append((ids[order], scores[order, c]))
    return result


def select(scores, ids, k, chunk):
    top = TopKPerClass(scores.shape[1], k)
    for start in range(0, len(ids), chunk):
        top.add(scores[start : start + chunk], ids[start : start + chunk])
    return top.result()


@pytest.mark.parametrize("k,chunk", [(1, 7), (3, 1), (10, 64), (37, 1000), (500, 33)])
def test_equals_a_full_sort_on_random_data(k, chunk):
    rng = np.random.default_rng(k)
    n, w = 700, 6
    scores = rng.random((n, w), dtype=np.float32)
    scores[rng.random((n, w)) < 0.2] = 0.5  # many exact ties
    scores[:, 5] = -rng.random(n, dtype=np.float32)  # negative scores rank below positive ones
    ids = np.arange(n, dtype=np.int64) * 3 + 11
    selection = select(scores, ids, k, chunk)
    for c, (want_ids, want_scores) in enumerate(full_sort(scores, ids, k)):
        np.testing.assert_array_equal(key_ids(selection.column(c)), want_ids)
        np.testing.assert_array_equal(key_scores(selection.column(c)), want_scores)


def test_equal_scores_keep_the_segment_read_first():
    top = TopKPerClass(1, 2)
    top.add(np.full((4, 1), 0.25, np.float32), np.array([5, 6, 7, 8]))
    assert key_ids(top.result().column(0)).tolist() == [5, 6]


def test_keys_round_trip_and_rank_like_the_scores():
    values = np.array([1.0, 0.5, 0.0, -0.0, -0.5, np.inf, -np.inf, 1e-40], np.float32)
    ids = np.arange(len(values), dtype=np.int64)
    keys = score_keys(values, ids)
    np.testing.assert_array_equal(key_scores(keys), values)
    np.testing.assert_array_equal(key_ids(keys), ids)
    assert np.argsort(keys, kind="stable").tolist() == [5, 0, 1, 7, 2, 3, 4, 6]


def test_fewer_segments_than_k_keeps_them_all():
    top = TopKPerClass(2, 100)
    top.add(np.array([[0.1, 0.9], [0.2, 0.8]], np.float32), np.array([0, 1]))
    selection = top.result()
    assert key_ids(selection.column(0)).tolist() == [1, 0]
    assert key_ids(selection.column(1)).tolist() == [0, 1]


def test_merge_of_two_processes_equals_one_selection():
    rng = np.random.default_rng(3)
    scores = rng.random((400, 4), dtype=np.float32)
    scores[::7] = 0.75  # ties across the two halves
    ids = np.arange(400, dtype=np.int64)
    whole = select(scores, ids, 25, 50)
    halves = [select(scores[:150], ids[:150], 25, 50), select(scores[150:], ids[:250], 25, 50)]
    merged = merge(halves, [0, 150], 25)
    for c in range(4):
        np.testing.assert_array_equal(merged.column(c), whole.column(c))


def test_a_nan_score_is_an_error_naming_the_segment():
    top = TopKPerClass(2, 3)
    with pytest.raises(SegmentError, match="segment 41 hold NaN"):
        top.add(np.array([[0.1, 0.2], [0.3, np.nan]], np.float32), np.array([40, 41]))


def test_ids_outside_31_bits_and_k_below_one_are_errors():
    with pytest.raises(SegmentError, match="segment ids must lie in"):
        TopKPerClass(1, 1).add(np.zeros((1, 1), np.float32), np.array([MAX_ID + 1]))
    with pytest.raises(SegmentError, match="--segment_max_pred=0"):
        TopKPerClass(1, 0)


def test_memory_is_bounded_by_the_kept_entries():
    """§2: a stream 200 times K per class long keeps one buffer of 1.25 K keys a class."""
    rng = np.random.default_rng(5)
    top = TopKPerClass(3, 8)
    buffer = top.keys
    scores = rng.random((1600, 3), dtype=np.float32)
    ids = np.arange(1600, dtype=np.int64)
    for start in range(0, 1600, 50):
        top.add(scores[start : start + 50], ids[start : start + 50])
        assert top.keys is buffer and buffer.shape == (3, 10) and top.counts.max() <= 10
    selection = top.result()
    for c, (want_ids, _) in enumerate(full_sort(scores, ids, 8)):
        np.testing.assert_array_equal(key_ids(selection.column(c)), want_ids)
