"""Hit@1, PERR, GAP and mAP (fidelity.md §6): hand-worked cases and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from yt8m.metrics import (
    EvaluationMetrics,
    MetricsError,
    gap,
    hit_at_one,
    mean_average_precision,
    perr,
    top_k_per_row,
)

# ---- brute force, written from the definitions, one video / one entry at a time ----


def brute_ranking(row: np.ndarray) -> list[int]:
    """Classes by confidence, highest first; equal confidence: smaller class first."""
    return sorted(range(len(row)), key=lambda c: (-row[c], c))


def brute_ap(entries: list[tuple[float, bool]], positives: int) -> float:
    """AP of a pooled list; equal confidences form one threshold (metrics.py docstring)."""
    if positives == 0:
        return 0.0
    entries = sorted(entries, key=lambda e: -e[0])
    total, seen, hits, i = 0.0, 0, 0, 0
    while i < len(entries):
        j = i
        while j < len(entries) and entries[j][0] == entries[i][0]:
            j += 1
        group_hits = sum(rel for _, rel in entries[i:j])
        seen, hits = j, hits + group_hits
        total += hits / seen * group_hits
        i = j
    return total / positives


def brute_pool(pred: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[int, float, bool]]:
    pool = []
    for row, lab in zip(pred, labels, strict=True):
        for c in brute_ranking(row)[:k]:
            pool.append((c, float(row[c]), bool(lab[c])))
    return pool


def brute_gap(pred, labels, k=20):
    pool = brute_pool(pred, labels, k)
    return brute_ap([(conf, rel) for _, conf, rel in pool], int(labels.sum()))


def brute_maps(pred, labels, k=20):
    pool = brute_pool(pred, labels, k)
    aps = []
    for c in range(labels.shape[1]):
        entries = [(conf, rel) for cls, conf, rel in pool if cls == c]
        aps.append(brute_ap(entries, int(labels[:, c].sum())))
    positive = [ap for c, ap in enumerate(aps) if labels[:, c].sum() > 0]
    return float(np.mean(aps)), float(np.mean(positive)) if positive else 0.0


def brute_hit_at_one(pred, labels):
    return float(
        np.mean([lab[brute_ranking(row)[0]] for row, lab in zip(pred, labels, strict=True)])
    )


def brute_perr(pred, labels):
    total = 0.0
    for row, lab in zip(pred, labels, strict=True):
        n = int(lab.sum())
        if n:
            total += sum(bool(lab[c]) and row[c] > 0 for c in brute_ranking(row)[:n]) / n
    return total / len(pred)


def random_split(seed: int, videos: int, classes: int, tied: bool):
    rng = np.random.default_rng(seed)
    pred = rng.random((videos, classes))
    if tied:  # few distinct values: ties inside videos, across videos and at the k-th place
        pred = np.round(pred * 4) / 4
    labels = rng.random((videos, classes)) < 3.0 / classes
    labels[: videos // 5] = False  # some videos without labels
    return pred, labels


# ---- hand-worked cases ----

PRED = np.array([[0.9, 0.8, 0.1, 0.05], [0.2, 0.7, 0.6, 0.0]])
LABELS = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=bool)


def test_gap_counts_labels_outside_every_top_k():
    # fidelity.md §6. Top 2: 0.9 (hit), 0.8, 0.7, 0.6 (hit); class 3 of video 0 is
    # outside its top 2 but counts: (1/1 + 2/4) / 3.
    assert gap(PRED, LABELS, top_k=2) == pytest.approx(0.5)


def test_gap_video_without_labels_adds_entries_not_positives():
    pred = np.vstack([PRED, [0.95, 0.0, 0.0, 0.0]])
    labels = np.vstack([LABELS, [0, 0, 0, 0]]).astype(bool)
    # pooled: 0.95 (no), 0.9 (hit), 0.8, 0.7, 0.6 (hit), 0.0 (no): (1/2 + 2/5) / 3
    assert gap(pred, labels, top_k=2) == pytest.approx(0.3)


def test_gap_k_larger_than_vocabulary_keeps_every_class():
    pred = np.array([[0.5, 0.9, 0.1]])
    labels = np.array([[1, 0, 0]], dtype=bool)
    assert gap(pred, labels, top_k=20) == pytest.approx(0.5)  # rank 2 of 3: 1/2


def test_gap_ties_are_one_threshold_and_independent_of_video_order():
    pred = np.array([[0.5, 0.1], [0.5, 0.1]])
    labels = np.array([[1, 0], [0, 0]], dtype=bool)
    assert gap(pred, labels, top_k=1) == pytest.approx(0.5)
    assert gap(pred[::-1], labels[::-1], top_k=1) == pytest.approx(0.5)


def test_tie_at_the_kth_place_keeps_the_smaller_class():
    # class 0 and 1 tie; the kept one is class 0, not relevant.
    assert gap(np.array([[0.5, 0.5]]), np.array([[0, 1]], dtype=bool), top_k=1) == 0.0
    values, indices = top_k_per_row(torch.tensor([[0.1, 0.7, 0.7, 0.7, 0.9]]), 3)
    assert indices.tolist() == [[4, 1, 2]]
    assert values[0].tolist() == pytest.approx([0.9, 0.7, 0.7])
    assert top_k_per_row(np.array([[0.3, 0.3, 0.3]]), 5)[1].tolist() == [[0, 1, 2]]


def test_map_both_variants_by_hand():
    # class 0: 0.9 hit -> 1; class 1: two misses, no positive -> 0; class 2: 0.6 hit -> 1;
    # class 3: no entry, one positive -> 0.
    assert mean_average_precision(PRED, LABELS, top_k=2) == pytest.approx(0.5)
    only_positive = mean_average_precision(PRED, LABELS, top_k=2, positive_classes_only=True)
    assert only_positive == pytest.approx(2 / 3)


def test_hit_at_one_and_perr_by_hand():
    assert hit_at_one(PRED, LABELS) == pytest.approx(0.5)
    assert perr(PRED, LABELS) == pytest.approx((1 / 2 + 0) / 2)


def test_perr_ignores_zero_confidences_and_videos_without_labels_count_zero():
    pred = np.array([[0.0, 0.0], [0.3, 0.2]])
    labels = np.array([[1, 0], [0, 0]], dtype=bool)
    assert perr(pred, labels) == 0.0
    assert hit_at_one(pred, labels) == pytest.approx(0.5)  # Hit@1 has no such rule


# ---- against brute force on random data ----


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("top_k", [1, 3, 20])
def test_metrics_match_brute_force(tied, top_k):
    pred, labels = random_split(seed=top_k, videos=40, classes=12, tied=tied)
    metrics = EvaluationMetrics(12, top_k)
    for start in range(0, 40, 7):  # uneven batches
        metrics.accumulate(torch.from_numpy(pred[start : start + 7]), labels[start : start + 7])
    result = metrics.get()
    full_map, positive_map = brute_maps(pred, labels, top_k)
    assert result["num_videos"] == 40
    assert result["gap"] == pytest.approx(brute_gap(pred, labels, top_k), abs=1e-12)
    assert result["map"] == pytest.approx(full_map, abs=1e-12)
    assert result["map_positive_classes"] == pytest.approx(positive_map, abs=1e-12)
    assert result["hit_at_one"] == pytest.approx(brute_hit_at_one(pred, labels), abs=1e-12)
    assert result["perr"] == pytest.approx(brute_perr(pred, labels), abs=1e-12)


def test_top_k_per_row_matches_brute_ranking():
    pred, _ = random_split(seed=7, videos=30, classes=9, tied=True)
    values, indices = top_k_per_row(pred, 5)
    for row, idx, val in zip(pred, indices, values, strict=True):
        assert idx.tolist() == brute_ranking(row)[:5]
        assert val.tolist() == row[idx].tolist()


def test_batch_results_and_memory_bounded_by_top_k():
    pred, labels = random_split(seed=3, videos=25, classes=50, tied=False)
    metrics = EvaluationMetrics(50, top_k=4)
    batch = metrics.accumulate(pred, labels, loss=np.full(25, 2.0))
    assert batch["gap"] == pytest.approx(brute_gap(pred, labels, 4), abs=1e-12)
    assert batch["loss"] == 2.0 and metrics.get()["avg_loss"] == 2.0
    assert sum(a.size for a in metrics._confidences) == 25 * 4  # kept entries only


def test_float32_torch_and_numpy_inputs_agree():
    pred, labels = random_split(seed=5, videos=20, classes=10, tied=False)
    pred32 = pred.astype(np.float32)
    assert gap(torch.from_numpy(pred32), torch.from_numpy(labels)) == gap(pred32, labels)


def test_clear_and_errors():
    metrics = EvaluationMetrics(4, 2)
    metrics.accumulate(PRED, LABELS)
    metrics.clear()
    with pytest.raises(MetricsError, match="no videos"):
        metrics.get()
    with pytest.raises(MetricsError, match="NaN"):
        metrics.accumulate(np.array([[0.1, np.nan, 0.2, 0.3]]), np.zeros((1, 4), dtype=bool))
    with pytest.raises(MetricsError, match="expected"):
        metrics.accumulate(np.zeros((2, 5)), np.zeros((2, 5), dtype=bool))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("classes", [288, 293])  # the block path (C >= 32 * (k + 1)), a tail
def test_top_k_per_row_block_path_matches_brute_ranking(tied, classes):
    pred, labels = random_split(seed=classes, videos=30, classes=classes, tied=tied)
    pred[3] = 0.25  # a whole row tied
    pred[4, -1] = 2.0  # the best entry in the tail columns
    for k in (1, 7):
        values, indices = top_k_per_row(pred.astype(np.float32), k)
        for row, idx, val in zip(pred.astype(np.float32), indices, values, strict=True):
            assert idx.tolist() == brute_ranking(row)[:k]
            assert val.tolist() == row[idx].tolist()
    assert gap(pred, labels, top_k=7) == pytest.approx(brute_gap(pred, labels, 7), abs=1e-12)


def test_block_path_names_the_row_holding_nan():
    pred = np.random.default_rng(0).random((5, 400))
    pred[3, 399] = np.nan
    with pytest.raises(MetricsError, match="video 3 "):
        EvaluationMetrics(400, 3).accumulate(pred, np.zeros((5, 400), dtype=bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_path_signed_infinite_and_signed_zero_values(dtype):
    # fidelity.md §6 ranking rule: -0.0 == 0.0 is a tie (smaller class first), infinities rank
    rng = np.random.default_rng(11)
    pred = rng.choice([-np.inf, -1.5, -0.0, 0.0, 0.25, 3.0, np.inf], size=(12, 555)).astype(dtype)
    pred[5] = rng.normal(size=555)  # a row without ties
    pred.flags.writeable = False  # read-only input: only read
    for k in (1, 9):
        values, indices = top_k_per_row(pred, k)
        for row, idx, val in zip(pred, indices, values, strict=True):
            assert idx.tolist() == brute_ranking(row)[:k]
            assert val.tolist() == row[idx].tolist()


def test_block_path_names_a_row_that_is_all_nan():
    pred = np.full((1, 400), np.nan)
    with pytest.raises(MetricsError, match="video 0 "):
        EvaluationMetrics(400, 3).accumulate(pred, np.zeros((1, 400), dtype=bool))


@pytest.mark.parametrize(
    ("first", "second", "class_0_ap"),
    [(np.nextafter(0.5, 1.0), 0.5, 1.0), (0.0, -0.0, 0.5)],  # one ulp apart; equal values
)
def test_map_ranks_by_exact_confidence_and_ties_only_equal_ones(first, second, class_0_ap):
    # fidelity.md §6: class 0 holds a relevant `first` and an irrelevant `second`; only
    # equal values (-0.0 == 0.0) form one threshold: precision 1/2 instead of 1/1
    pred = np.array([[first, 1.0], [second, 0.9]])
    labels = np.array([[1, 0], [0, 0]], dtype=bool)
    result = _accumulated(pred, labels, 2)
    assert result["map_positive_classes"] == class_0_ap
    assert result["map"] == class_0_ap / 2  # class 1 has no positives
    assert result["map"] == pytest.approx(brute_maps(pred, labels, 2)[0], abs=1e-12)
    assert result["gap"] == pytest.approx(brute_gap(pred, labels, 2), abs=1e-12)


@pytest.mark.parametrize("float_labels", [False, True])
@pytest.mark.parametrize("near_ties", [False, True])
def test_metrics_match_brute_force_with_signed_zero_and_near_ties(float_labels, near_ties):
    # fidelity.md §6; -0.0 / 0.0 (one tie) and near ties (one ulp apart) in one class
    rng = np.random.default_rng(21)
    choices = [-0.0, 0.0, 0.5, -0.25] + ([np.nextafter(0.5, 1.0)] if near_ties else [])
    base = rng.choice(choices, size=(45, 13))
    labels = rng.random((45, 13)) < 0.3
    result = _accumulated(base, labels.astype(np.float32) if float_labels else labels, 4)
    full_map, positive_map = brute_maps(base, labels, 4)
    assert result["gap"] == pytest.approx(brute_gap(base, labels, 4), abs=1e-12)
    assert result["map"] == pytest.approx(full_map, abs=1e-12)
    assert result["map_positive_classes"] == pytest.approx(positive_map, abs=1e-12)
    assert result["perr"] == pytest.approx(brute_perr(base, labels), abs=1e-12)


def _accumulated(pred: np.ndarray, labels: np.ndarray, top_k: int) -> dict[str, float]:
    metrics = EvaluationMetrics(pred.shape[1], top_k)
    for start in range(0, len(pred), 8):
        metrics.accumulate(pred[start : start + 8], labels[start : start + 8])
    return metrics.get()


def test_a_row_with_nan_leaves_the_other_rows_ranked():
    # fidelity.md §6 ranking rule, rows around a NaN row (and an empty matrix)
    pred, _ = random_split(seed=9, videos=11, classes=400, tied=True)
    pred[7, 5] = np.nan
    values, indices = top_k_per_row(pred, 6)
    for number, (row, idx, val) in enumerate(zip(pred, indices, values, strict=True)):
        if number == 7:
            assert np.isnan(val).all()
        else:
            assert idx.tolist() == brute_ranking(row)[:6]
            assert val.tolist() == row[idx].tolist()
    assert [a.shape for a in top_k_per_row(pred[:0], 6)] == [(0, 6), (0, 6)]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 700),
    st.integers(1, 40),
    st.sampled_from([np.float32, np.float64, np.int64]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_top_k_per_row_equals_brute_ranking_for_any_shape(classes, k, dtype, tied, seed):
    # fidelity.md §6 ranking rule, on both paths of the kernel (few or many column blocks),
    # with ties, infinities and signed zeros
    rng = np.random.default_rng(seed)
    pool = [-np.inf, -1.0, -0.0, 0.0, 0.5, 2.0, np.inf] if dtype != np.int64 else [-3, 0, 7]
    pred = rng.choice(pool, (4, classes)) if tied else rng.normal(size=(4, classes)) * 100
    pred = pred.astype(dtype)
    values, indices = top_k_per_row(pred, k)
    assert values.shape == indices.shape == (4, min(k, classes))
    for row, idx, val in zip(pred, indices, values, strict=True):
        assert idx.tolist() == brute_ranking(row)[:k]
        assert val.tolist() == row[idx].astype(values.dtype).tolist()
