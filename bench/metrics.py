"""GAP over 100,000 videos x 4,716 classes: yt8m.metrics vs a straightforward peer.

Peer (measured in the same run on the same batches): the original's approach — top 20 of
each video with numpy.argpartition in a Python loop, then one global sort of the pooled
entries and a loop summing precision at each hit. Ours: `EvaluationMetrics`
(accumulate + get, which also computes Hit@1, PERR and mAP). Predictions are float64
(continuous, so no ties: the peer's arbitrary tie order cannot matter). Data generation
is not timed. Run: .venv/bin/python bench/metrics.py [--videos N]
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
    """Seeded [B, C] predictions correlated with ~3.4 labels per video."""
    rng = np.random.default_rng(seed)
    for start in range(0, videos, batch):
        size = min(batch, videos - start)
        labels = rng.random((size, NUM_CLASSES)) < 3.4 / NUM_CLASSES
        predictions = rng.random((size, NUM_CLASSES)) * 0.5 + labels * rng.random((size, 1))
        yield predictions, labels


class PerVideoGap:
    """The straightforward peer: a Python loop over videos, one global sort at the end."""

    def __init__(self) -> None:
        self.confidences: list[float] = []
        self.relevant: list[bool] = []
        self.positives = 0

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        for row, row_labels in zip(predictions, labels, strict=True):
            top = np.argpartition(row, -TOP_K)[-TOP_K:]
            self.confidences.extend(row[top].tolist())
            self.relevant.extend(row_labels[top].tolist())
        self.positives += int(labels.sum())

    def get(self) -> float:
        order = np.argsort(-np.asarray(self.confidences))
        relevant = np.asarray(self.relevant)[order]
        hits, total = 0, 0.0
        for rank, is_hit in enumerate(relevant.tolist(), start=1):
            if is_hit:
                hits += 1
                total += hits / rank
        return total / self.positives


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    ours, peer = EvaluationMetrics(NUM_CLASSES, TOP_K), PerVideoGap()
    ours_s = peer_s = 0.0
    for predictions, labels in batches(args.videos, args.batch):
        start = time.perf_counter()
        ours.accumulate(predictions, labels)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        peer.accumulate(predictions, labels)
        peer_s += time.perf_counter() - start
    start = time.perf_counter()
    result = ours.get()
    ours_s += time.perf_counter() - start
    start = time.perf_counter()
    peer_gap = peer.get()
    peer_s += time.perf_counter() - start
    kept = sum(a.nbytes for a in ours._confidences + ours._classes + ours._relevant)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine {platform.machine()}, {os.cpu_count()} cores")
    print(f"command {' '.join([sys.executable, *sys.argv])}")
    print(f"videos {args.videos} x classes {NUM_CLASSES}, top_k {TOP_K}, batch {args.batch}")
    print(f"ours (EvaluationMetrics, all metrics) {ours_s:.2f} s  GAP {result['gap']:.12f}")
    print(f"peer (per-video loop + global sort)   {peer_s:.2f} s  GAP {peer_gap:.12f}")
    print(f"speed-up {peer_s / ours_s:.1f}x; |difference| {abs(result['gap'] - peer_gap):.2e}")
    print(
        f"ours keeps {kept / 2**20:.1f} MiB for {args.videos} videos "
        f"({kept / args.videos:.0f} B/video -> {kept / args.videos * 1.4e6 / 2**30:.2f} GiB "
        f"for 1.4 M videos); process peak RSS {peak_rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
