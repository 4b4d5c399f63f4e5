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
Data generation is not timed. Ours runs first, alone, so the peak RSS printed after it
is its own (plus one generated batch). Run: .venv/bin/python bench/metrics.py [--videos N]
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
import torch

from yt8m.metrics import EvaluationMetrics

NUM_CLASSES = 4716
TOP_K = 20


def batches(videos: int, batch: int, seed: int = 0):
    """Seeded [B, C] float64 predictions correlated with ~3.4 labels per video."""
    rng = np.random.default_rng(seed)
    for start in range(0, videos, batch):
        size = min(batch, videos - start)
        labels = rng.random((size, NUM_CLASSES)) < 3.4 / NUM_CLASSES
        predictions = rng.random((size, NUM_CLASSES)) * 0.5 + labels * rng.random((size, 1))
        yield predictions, labels


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


def timed(metric, videos: int, batch: int) -> tuple[float, float | dict]:
    """Seconds spent in accumulate + get over the generated batches, and get()'s result."""
    seconds = 0.0
    for predictions, labels in batches(videos, batch):
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
    args = parser.parse_args()
    ours = EvaluationMetrics(NUM_CLASSES, TOP_K)
    ours_s, result = timed(ours, args.videos, args.batch)
    ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = sum(a.nbytes for a in ours._confidences + ours._classes + ours._relevant)
    numpy_s, numpy_gap = timed(NumpyRowPeer(), args.videos, args.batch)
    peer_s, peer_gap = timed(TripletPeer(), args.videos, args.batch)
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"machine {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
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
        f"ours keeps {kept / 2**20:.1f} MiB for {args.videos} videos "
        f"({kept / args.videos:.0f} B/video -> {kept / args.videos * 1.4e6 / 2**30:.2f} GiB "
        f"for 1.4 M videos); process peak RSS after ours {ours_rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
