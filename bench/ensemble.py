"""`yt8m average` vs a straightforward dictionary-of-counters averaging, same run.

Seven synthetic prediction CSVs of 700,640 videos (the Kaggle 2017 test split) x 50
pairs, equal weights, top 20 written. The peer is the original's script structure
(a `defaultdict(Counter)` filled pair by pair, then the 20 best of every video) reading
ALL pairs and breaking ties like ours, so both outputs must be byte-identical. Each
side runs in its own process; its peak RSS is its own. The CSVs live in a temporary
directory deleted at the end, or in --keep DIR, reused by the next run with the same
--videos. Run: .venv/bin/python bench/ensemble.py [--videos N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

import numpy as np

from yt8m.atomic import atomic_output
from yt8m.cpu_memory import keep_freed_memory
from yt8m.ensemble import average_files, parse_models
from yt8m.submission import SUBMISSION_HEADER, format_ranked_lines

NUM_CLASSES, FILES, PAIRS, POOL = 4716, 7, 50, 70


def write_inputs(folder: str, videos: int, seed: int = 0) -> list[str]:
    """Seven files; every video draws its 50 labels per model from a pool of 70."""
    rng = np.random.default_rng(seed)
    paths = [os.path.join(folder, f"model{f}.csv") for f in range(FILES)]
    outs = [open(p, "w") for p in paths]  # noqa: SIM115 - closed below
    for out in outs:
        out.write(SUBMISSION_HEADER + "\n")
    for start in range(0, videos, 20_000):
        n = min(20_000, videos - start)
        ids = [f"vid{i:07d}" for i in range(start, start + n)]
        pool = (rng.integers(0, NUM_CLASSES, (n, 1)) + 67 * np.arange(POOL)) % NUM_CLASSES
        for out in outs:
            chosen = np.argsort(rng.random((n, POOL)), axis=1)[:, :PAIRS]
            labels = np.take_along_axis(pool, chosen, axis=1)
            confidences = -np.sort(-rng.random((n, PAIRS)), axis=1)
            out.write(format_ranked_lines(ids, labels, confidences))
    for out in outs:
        out.close()
    return paths


def reuse_inputs(folder: str, videos: int) -> list[str] | None:
    """The inputs kept in `folder` by an earlier run with the same --videos, if any."""
    paths = [os.path.join(folder, f"model{f}.csv") for f in range(FILES)]
    if not all(os.path.isfile(p) for p in paths):
        return None
    with open(paths[-1], "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    return paths if lines == videos + 1 else None


def peer_average(paths: list[str], output: str, top_k: int = 20) -> None:
    """Dictionary of counters, every pair read, ties: smaller label first."""
    blend: dict[str, Counter] = defaultdict(Counter)
    weight = 1.0
    for path in paths:
        with open(path) as f:
            f.readline()
            for line in f:
                video_id, pairs = line.rstrip("\n").split(",")
                tokens = pairs.split(" ")
                counter = blend[video_id]
                for i in range(0, len(tokens), 2):
                    counter[int(tokens[i])] += weight * float(tokens[i + 1])
    total = weight * len(paths)
    with atomic_output(output) as out:
        out.write(SUBMISSION_HEADER + "\n")
        for video_id, counter in blend.items():
            top = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
            out.write(video_id + "," + " ".join(f"{lab:d} {s / total:f}" for lab, s in top) + "\n")


def run_side(side: str, paths: list[str], output: str) -> None:
    """Child process: average, then print seconds and this process's peak RSS as JSON."""
    start = time.perf_counter()
    if side == "ours":
        keep_freed_memory()  # as `yt8m average` does
        average_files(parse_models(paths), output, progress=False)
    else:
        peer_average(paths, output)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak}))


def measure(side: str, paths: list[str], output: str) -> dict:
    command = [sys.executable, __file__, "--side", side, "--output", output, *paths]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=700_640)
    parser.add_argument(
        "--keep", metavar="DIR", help="keep the inputs in DIR and reuse them when they are there"
    )
    parser.add_argument("--side", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.paths, args.output)
        return
    with tempfile.TemporaryDirectory(prefix="yt8m-bench-ensemble-") as scratch:
        folder = args.keep or scratch
        start = time.perf_counter()
        paths = reuse_inputs(folder, args.videos) if args.keep else None
        if paths is None:
            os.makedirs(folder, exist_ok=True)
            paths = write_inputs(folder, args.videos)
        size = sum(os.path.getsize(p) for p in paths) / 2**30
        print(
            f"inputs {FILES} x {args.videos} videos x {PAIRS} pairs ({size:.2f} GiB) "
            f"ready in {time.perf_counter() - start:.0f} s"
        )
        ours = measure("ours", paths, os.path.join(folder, "ours.csv"))
        peer = measure("peer", paths, os.path.join(folder, "peer.csv"))
        with (
            open(os.path.join(folder, "ours.csv"), "rb") as a,
            open(os.path.join(folder, "peer.csv"), "rb") as b,
        ):
            identical = a.read() == b.read()
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine {platform.machine()}, {os.cpu_count()} cores")
    print(f"command {' '.join([sys.executable, *sys.argv])}")
    print(
        f"ours (yt8m average)        {ours['seconds']:7.1f} s  peak RSS {ours['peak_rss_mib']:6.0f} MiB"
    )
    print(
        f"peer (dict of counters)    {peer['seconds']:7.1f} s  peak RSS {peer['peak_rss_mib']:6.0f} MiB"
    )
    print(f"speed-up {peer['seconds'] / ours['seconds']:.1f}x; outputs byte-identical: {identical}")


if __name__ == "__main__":
    main()
