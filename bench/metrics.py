"""GAP over 100,000 videos x 4,716 classes: yt8m.metrics vs two per-video peers.

Peers, measured in the same run on the same batches:
- the straightforward peer (the original eval_util's structure): a Python loop over the
  videos, each row's top 20 by numpy.argpartition turned into Python (class, prediction,
  label) triplets, then one global Python sort of the pooled triplets and a loop summing
  precision at each hit;
- a stronger numpy-per-row reference: the same loop, but keeping numpy arrays and
  sorting the pool with numpy.
Ours: `EvaluationMetrics` (accumulate + get, which also computes Hit@1, PERR and mAP).
Predictions are float64 (continuous, so no ties: the peers' tie order cannot matter).
Also timed: the floor, one read of the predictions (numpy max per row, one thread),
which no exact top-k can beat; and, with --float32, ours and the peer again on the
same predictions rounded to float32 (what models emit; such pools hold ties, which the
peer orders arbitrarily, so the two GAPs may differ slightly).
Data generation is not timed. Ours runs first, alone, so the peak RSS printed after it
is its own (plus one generated batch).
Run: .venv/bin/python bench/metrics.py [--videos N] [--float32]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time

import numpy as np

from yt8m.metrics import EvaluationMetrics

NUM_CLASSES = 4716
TOP_K = 20


def batches(videos: int, batch: int, dtype=np.float64, seed: int = 0):
    """Seeded [B, C] predictions correlated with ~3.4 labels per video."""
    rng = np.random.default_rng(seed)
    for start in range(0, videos, batch):
        size = min(batch, videos - start)
        labels = rng.random((size, NUM_CLASSES)) < 3.4 / NUM_CLASSES
        predictions = rng.random((size, NUM_CLASSES)) * 0.5 + labels * rng.random((size, 1))
        yield predictions.astype(dtype, copy=False), labels


class TripletPeer:
    """Python triplets per video, one global Python sort at the end."""

    def __init__(self) -> None:
        self.triplets: list[tuple[int, float, bool]] = []
        self.positives = 0

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        for row, row_labels in zip(predictions, labels, strict=True):
            top = np.argpartition(row, -TOP_K)[-TOP_K:]
            self.triplets.extend((int(c), float(row[c]), bool(row_labels[c])) for c in top)
        self.positives += int(labels.sum())

    def get(self) -> float:
        self.triplets.sort(key=lambda triplet: triplet[1], reverse=True)
        hits, total = 0, 0.0
        for rank, (_, _, is_hit) in enumerate(self.triplets, start=1):
            if is_hit:
                hits += 1
                total += hits / rank
        return total / self.positives


class NumpyRowPeer:
    """The same loop keeping numpy arrays, one global numpy sort at the end."""

    def __init__(self) -> None:
        self.confidences: list[np.ndarray] = []
        self.relevant: list[np.ndarray] = []
        self.positives = 0

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        for row, row_labels in zip(predictions, labels, strict=True):
            top = np.argpartition(row, -TOP_K)[-TOP_K:]
            self.confidences.append(row[top])
            self.relevant.append(row_labels[top])
        self.positives += int(labels.sum())

    def get(self) -> float:
        order = np.argsort(-np.concatenate(self.confidences))
        relevant = np.concatenate(self.relevant)[order]
        hits = np.cumsum(relevant)
        precision = hits / np.arange(1, relevant.size + 1)
        return float(precision[relevant].sum() / self.positives)


class ReadPass:
    """The floor: one read of each batch's predictions (their row maxima)."""

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        predictions.max(axis=1)

    def get(self) -> float:
        return float("nan")


def timed(metric, videos: int, batch: int, dtype=np.float64) -> tuple[float, float | dict]:
    """Seconds spent in accumulate + get over the generated batches, and get()'s result."""
    seconds = 0.0
    for predictions, labels in batches(videos, batch, dtype):
        start = time.perf_counter()
        metric.accumulate(predictions, labels)
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    result = metric.get()
    return seconds + time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--float32", action="store_true", help="also time float32 predictions")
    args = parser.parse_args()
    sizes = (args.videos, args.batch)
    ours = EvaluationMetrics(NUM_CLASSES, TOP_K)
    ours_s, result = timed(ours, *sizes)
    ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = sum(a.nbytes for a in ours._confidences + ours._classes + ours._relevant)
    floor_s, _ = timed(ReadPass(), *sizes)
    numpy_s, numpy_gap = timed(NumpyRowPeer(), *sizes)
    peer_s, peer_gap = timed(TripletPeer(), *sizes)
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"machine {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"command {' '.join([sys.executable, *sys.argv])}")
    print(
        f"videos {args.videos} x classes {NUM_CLASSES} float64, top_k {TOP_K}, batch {args.batch}"
    )
    print(f"ours (EvaluationMetrics, all metrics)    {ours_s:6.2f} s  GAP {result['gap']:.12f}")
    print(f"peer (Python triplets + global sort)     {peer_s:6.2f} s  GAP {peer_gap:.12f}")
    print(f"reference (numpy per row + numpy sort)   {numpy_s:6.2f} s  GAP {numpy_gap:.12f}")
    print(
        f"speed-up {peer_s / ours_s:.1f}x vs the peer, {numpy_s / ours_s:.1f}x vs the reference; "
        f"|difference| {abs(result['gap'] - peer_gap):.2e}, {abs(result['gap'] - numpy_gap):.2e}"
    )
    print(
        f"floor (one read of the predictions)       {floor_s:6.2f} s; 20x the peer needs "
        f"{peer_s / 20:.2f} s; ours = floor + {ours_s - floor_s:.2f} s"
    )
    if args.float32:
        ours32_s, result32 = timed(EvaluationMetrics(NUM_CLASSES, TOP_K), *sizes, np.float32)
        peer32_s, peer32_gap = timed(TripletPeer(), *sizes, np.float32)
        print(
            f"float32: ours {ours32_s:.2f} s, peer {peer32_s:.2f} s, speed-up "
            f"{peer32_s / ours32_s:.1f}x; |difference| {abs(result32['gap'] - peer32_gap):.2e}"
        )
    print(
        f"ours keeps {kept / 2**20:.1f} MiB for {args.videos} videos "
        f"({kept / args.videos:.0f} B/video -> {kept / args.videos * 1.4e6 / 2**30:.2f} GiB "
        f"for 1.4 M videos); process peak RSS after ours {ours_rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
