"""The 2019 segment task at its real scale: MAP@100K, and the per-class selection.

1. ``map``: MAP@100K of a synthetic submission, 1,000 classes x 100,000 entries (100 M
   ``vid:start`` entries, about 1 GB of CSV), against a million rated pairs (200,000 rated
   segments of 50,000 videos, 5 classes each, about half positive). Ours:
   `yt8m.segments.score.score_submission` (the hash index of the rated pairs built, the file
   read and every entry checked). Peer, the starter's structure (segment_eval_inference.py
   read_segment_predictions + the AP calculator): per class line a Python list of the
   entries, capped, filtered by a dict of the rated pairs, then one sort per class and a
   loop summing the precisions. The ground truth's dict and arrays are built before the
   timers; the file is written (by our writer) and read once before either is timed, so
   both read it from the page cache. Target: >= 20x, MAP equal to 1e-9.
2. ``selection``: `yt8m.segments.selection.TopKPerClass` over a stream of random float32
   scores for 3,000,000 segments x 1,000 classes, K = 100,000, in chunks of 8,192 segments
   (an inference batch); only the `add` calls and the final sort are timed (drawing the
   scores is not). It runs in a child process that imports no torch, whose peak resident
   memory (VmHWM: the child's own, not the forking parent's) is reported. Beside it, the
   scoring it must keep up with: a small NetVLAD (`NetVLADModelLF`, 64 clusters, hidden
   1024, gated MoE, 3,862 classes, 5 sampled frames; the seed's has 256 clusters) and a
   tiny one (the demo's 16 clusters, hidden 64) scoring 5-frame segments of 1024+128 uint8
   features through `yt8m.inference.predict`, batches of 1,024 segments, in this process.
   Target: peak under 2 GB, the selection no slower than the scoring.

Run: .venv/bin/python bench/segments.py [--part map|selection|all] [--classes N]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from yt8m.segments.ground_truth import RatedPairs
from yt8m.segments.score import score_submission
from yt8m.segments.selection import Selection, TopKPerClass
from yt8m.segments.submission import write_segment_submission

VIDEOS, SLOTS, SEGMENT_SIZE = 50_000, 60, 5
RATED_PER_VIDEO, CLASSES_PER_SEGMENT = 4, 5
TOP_N = 100_000
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def video_ids(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct 4-character ids, as the 2018/2019 data's."""
    numbers = rng.choice(len(_ALPHABET) ** 4, size=count, replace=False)
    return ["".join(_ALPHABET[(n // 62**i) % 62] for i in range(4)) for n in numbers.tolist()]


def rated_pairs(classes: int, rng: np.random.Generator) -> RatedPairs:
    """200,000 rated segments (4 of each video's 60), each rated for 5 classes."""
    ids = video_ids(VIDEOS, rng)
    slots = np.sort(rng.random((VIDEOS, SLOTS)).argsort(axis=1)[:, :RATED_PER_VIDEO], axis=1)
    segment = (np.arange(VIDEOS)[:, None] * SLOTS + slots).reshape(-1)
    labels = np.stack([rng.choice(classes, CLASSES_PER_SEGMENT, replace=False) for _ in segment])
    video = np.repeat(segment // SLOTS, CLASSES_PER_SEGMENT)
    start = np.repeat(segment % SLOTS * SEGMENT_SIZE, CLASSES_PER_SEGMENT)
    score = (rng.random(len(video)) < 0.5).astype(np.float32)
    return RatedPairs(ids, video, start, labels.reshape(-1).astype(np.int64), score, "synthetic")


def submission_ids(truth: RatedPairs, classes: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [classes, TOP_N] segment ids (video x SLOTS + slot), best first: per class 90%
    of its rated segments, positives nearer the top, among random unrated segments."""
    rated_ids = truth.video * SLOTS + truth.start // SEGMENT_SIZE
    total = VIDEOS * SLOTS
    lines = np.empty((classes, TOP_N), np.int64)
    for c in range(classes):
        mine = np.flatnonzero(truth.label == c)
        mine = mine[rng.random(len(mine)) < 0.9]
        stride = int(rng.choice([7, 11, 13, 17, 19, 23, 29, 31]))  # coprime with total
        others = (int(rng.integers(total)) + stride * np.arange(TOP_N + len(mine))) % total
        others = others[~np.isin(others, rated_ids[truth.label == c])][: TOP_N - len(mine)]
        quality = rng.random(len(mine)) ** np.where(truth.score[mine] > 0, 3.0, 1.0)
        positions = np.sort((quality * (TOP_N - len(mine))).astype(np.int64))
        order = np.argsort(quality, kind="stable")
        lines[c] = np.insert(others, positions, rated_ids[mine][order])
    return lines


def peer_map(path: str, labels: dict, positives: dict, top_n: int) -> float:
    """The starter's structure: Python lists, a dict lookup per entry, a sort per class."""
    class_predictions = {}
    with open(path, encoding="utf-8") as stream:
        next(stream)  # the header (the starter's script, under Python 3, did not skip it)
        for line in stream:
            label_id, entries = line.split(",")
            label = int(label_id)
            ids = entries.split(" ")
            if top_n:
                ids = ids[:top_n]
            ids[-1] = ids[-1].rstrip("\n")
            class_predictions[label] = [i for i in ids if (i, label) in labels]
    aps = []
    for label in sorted(class_predictions):
        predictions = class_predictions[label]
        actuals = [labels[(p, label)] for p in predictions]
        scores = [x / len(predictions) for x in range(len(predictions), 0, -1)]
        order = sorted(range(len(scores)), key=lambda k: scores[k], reverse=True)
        total = positives.get(label, 0)
        if not total:
            continue
        ap, found = 0.0, 0
        for rank, k in enumerate(order, start=1):
            if actuals[k] > 0:
                found += 1
                ap += found / rank / total
        aps.append(ap)
    return float(np.mean(aps))


def bench_map(classes: int, runs: int) -> None:
    rng = np.random.default_rng(0)
    truth = rated_pairs(classes, rng)
    lines = submission_ids(truth, classes, rng)
    names = [
        f"{truth.video_ids[v]}:{s}"
        for v, s in zip(truth.video.tolist(), truth.start.tolist(), strict=True)
    ]
    labels = {
        (n, c): float(s)
        for n, c, s in zip(names, truth.label.tolist(), truth.score.tolist(), strict=True)
    }
    positives = {int(c): int(n) for c, n in enumerate(truth.positives(classes)) if n}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = str(Path(tmp) / "segments.csv")
        selection = Selection(lines, np.full(classes, TOP_N, np.int64))
        write_segment_submission(
            path, np.arange(classes), selection, truth.video_ids, SLOTS, SEGMENT_SIZE
        )
        del lines, selection
        size = os.path.getsize(path)
        Path(path).read_bytes()  # into the page cache, for both
        print(
            f"submission {classes} classes x {TOP_N} entries, {size / 1e9:.2f} GB; {len(truth.label):,} rated pairs"
        )
        for run in range(1, runs + 1):
            started, cpu = time.perf_counter(), time.process_time()
            ours = score_submission(path, truth, top_n=TOP_N, num_classes=classes).result.map
            ours_s, ours_cpu = time.perf_counter() - started, time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            peer = peer_map(path, labels, positives, TOP_N)
            peer_s, peer_cpu = time.perf_counter() - started, time.process_time() - cpu
            print(
                f"run {run}: ours {ours_s:6.2f} s (CPU {ours_cpu:6.2f} s) MAP {ours:.12f} | peer "
                f"{peer_s:6.2f} s (CPU {peer_cpu:6.2f} s) MAP {peer:.12f} | {peer_s / ours_s:5.1f}x "
                f"(CPU {peer_cpu / ours_cpu:5.1f}x) |diff| {abs(ours - peer):.1e} | load "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )


def select_child(segments: int, classes: int, chunk: int) -> None:
    """The selection alone (no torch): prints segments/s and the process's peak RSS."""
    rng = np.random.default_rng(1)
    top = TopKPerClass(classes, TOP_N)
    timed = 0.0
    for first in range(0, segments, chunk):
        rows = min(chunk, segments - first)
        scores = rng.random((rows, classes), dtype=np.float32)
        ids = np.arange(first, first + rows, dtype=np.int64)
        started = time.perf_counter()
        top.add(scores, ids)
        timed += time.perf_counter() - started
    started = time.perf_counter()
    top.result()
    finish = time.perf_counter() - started
    print(f"{segments / (timed + finish):.0f} {timed:.2f} {finish:.2f} {peak_rss_gib():.3f}")


def peak_rss_gib() -> float:
    """This process's peak resident memory since it started (Linux: VmHWM, which exec
    resets; ru_maxrss would keep the forking parent's resident size)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def netvlad_rate(clusters: int, hidden: int, batches: int, batch: int) -> float:
    """Segments/s of a NetVLAD scoring 5-frame segments through `predict`."""
    import torch

    from yt8m.distributed import init_distributed, shutdown
    from yt8m.flags import parse_flags
    from yt8m.inference import predict
    from yt8m.models.registry import build_model

    argv = [
        "--model=NetVLADModelLF", "--frame_features", "--feature_names=rgb,audio",
        "--feature_sizes=1024,128", "--num_classes=3862", f"--netvlad_cluster_size={clusters}",
        f"--netvlad_hidden_size={hidden}", "--gating", "--moe_prob_gating", "--iterations=5",
        "--netvlad_relu=False", "--progress=False", "--max_frames=5",
    ]  # fmt: skip
    flags = parse_flags(argv, "infer")
    torch.manual_seed(0)
    model = build_model(flags).eval()
    rng = np.random.default_rng(2)
    data = [
        {
            "video_ids": [""] * batch,
            "inputs": torch.from_numpy(rng.integers(0, 256, (batch, 5, 1152), dtype=np.uint8)),
            "num_frames": torch.full((batch,), 5, dtype=torch.int64),
        }
        for _ in range(2)
    ]
    process = init_distributed("cpu")
    try:
        list(predict(model, data[:1], flags, process, "warm-up"))
        started = time.perf_counter()
        for _ in predict(model, [data[i % 2] for i in range(batches)], flags, process, "bench"):
            pass
        return batches * batch / (time.perf_counter() - started)
    finally:
        shutdown(process)


def bench_selection(segments: int, classes: int, runs: int) -> None:
    chunk = 8192
    for run in range(1, runs + 1):
        child = subprocess.run(
            [sys.executable, __file__, "--select-child", str(segments), str(classes), str(chunk)],
            check=True,
            capture_output=True,
            text=True,
        )
        rate, timed, finish, peak = child.stdout.split()
        small = netvlad_rate(64, 1024, batches=8, batch=1024)
        tiny = netvlad_rate(16, 64, batches=8, batch=1024)
        print(
            f"run {run}: selection {float(rate):,.0f} segments/s ({segments:,} x {classes} in "
            f"{float(timed):.1f} s + {float(finish):.1f} s to sort), peak RSS {float(peak):.2f} "
            f"GiB | NetVLAD scoring: small {small:,.0f} segments/s (selection "
            f"{float(rate) / small:.0f}x), tiny {tiny:,.0f} segments/s (selection "
            f"{float(rate) / tiny:.1f}x)",
            flush=True,
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--select-child":
        select_child(*(int(a) for a in sys.argv[2:5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("map", "selection", "all"), default="all")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"machine {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"command {' '.join([sys.executable, *sys.argv])}")
    if args.part in ("map", "all"):
        bench_map(args.classes, args.runs)
    if args.part in ("selection", "all"):
        bench_selection(args.segments, args.classes, args.runs)


if __name__ == "__main__":
    main()
