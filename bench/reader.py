"""Reader throughput: files in the page cache -> ready batches, against the `tfrecord` package.

    .venv/bin/python bench/reader.py [--videos 1000] [--batch_size 64] [--repeats 3]

Writes 1,000 synthetic frame-level videos (60-300 frames, rgb 1024 + audio 128) in 8 shards,
reads them once to warm the page cache, then measures, best of `--repeats`:

* ours, one process: `make_loader(..., num_readers=0)` from files to batches
  (uint8 [B, 300, 1152], labels, ids, num_frames);
* the PyPI `tfrecord` package, same process, decoding the same files to the same arrays
  (id, int64 labels, uint8 frames [n, 1152]) — it makes no batches, so it is favoured;
* ours with 0, 1 and 2 DataLoader worker processes over `--passes` shuffled passes
  (training mode), so that starting the workers (about 80 ms) does not dominate: the
  scaling from 1 to 2 workers is the steady state a training run sees;
* what the machine itself allows for that work: two independent processes, each running
  the in-process reader over the same passes side by side, against one alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from tfrecord.reader import tfrecord_loader

from yt8m.data.loader import make_loader
from yt8m.data.records import parse_frame_record
from yt8m.data.synthetic import write_dataset
from yt8m.data.tfrecord import expand_pattern, read_records
from yt8m.flags import parse_flags

FEATURES = [("rgb", 1024), ("audio", 128)]


def peer_videos(files: list[str]):
    """The `tfrecord` package's decoding, finished into our arrays."""
    for path in files:
        for context, lists in tfrecord_loader(
            path, None, ["video_id", "labels"], sequence_description=["rgb", "audio"]
        ):
            parts = [
                np.frombuffer(b"".join(lists[name]), np.uint8).reshape(-1, size)
                for name, size in FEATURES
            ]
            yield bytes(context["video_id"]).decode(), context["labels"], np.concatenate(parts, 1)


def ours(pattern: str, readers: int, batch_size: int) -> int:
    flags = parse_flags(["--frame_features", f"--num_readers={readers}"], "eval")
    return sum(
        len(b["video_ids"])
        for b in make_loader(flags, pattern, training=False, batch_size=batch_size)
    )


def ours_training(pattern: str, readers: int, batch_size: int, passes: int) -> int:
    flags = parse_flags(
        ["--frame_features", f"--num_readers={readers}", f"--num_epochs={passes}"], "train"
    )
    return sum(
        len(b["video_ids"])
        for b in make_loader(flags, pattern, training=True, batch_size=batch_size)
    )


def best_rate(run, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        videos = run()
        rates.append(videos / (time.perf_counter() - start))
    return max(rates)


def side_by_side(pattern: str, batch_size: int, passes: int, processes: int) -> list[float]:
    """videos/s of `processes` independent processes, each reading in process at once."""
    command = [sys.executable, __file__, "--solo", pattern]
    command += [f"--batch_size={batch_size}", f"--passes={passes}"]
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in running]


def check_same_arrays(files: list[str]) -> None:
    peer = peer_videos(files[:1])
    for payload in list(read_records(files[0]))[:20]:
        record = parse_frame_record(payload, FEATURES)
        vid, labels, frames = next(peer)
        assert record.video_id == vid and np.array_equal(record.labels, labels)
        assert np.array_equal(record.frames, frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=20, help="passes for the worker scaling")
    parser.add_argument("--solo", metavar="PATTERN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.solo:  # one of the side-by-side processes: print its rate
        print(best_rate(lambda: ours_training(args.solo, 0, args.batch_size, args.passes), 1))
        return
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {platform.node()} {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    with tempfile.TemporaryDirectory() as root:
        pattern = write_dataset(
            root, videos={"train": args.videos}, shards=8, frames=(60, 300), levels=("frame",)
        )["frame"]["train"]
        files = expand_pattern(pattern)
        size = sum(os.path.getsize(f) for f in files)
        print(f"data: {args.videos} videos, 60-300 frames, {len(files)} files, {size / 1e6:.0f} MB")
        for path in files:  # page cache
            with open(path, "rb") as f:
                f.read()
        check_same_arrays(files)
        rate = best_rate(lambda: ours(pattern, 0, args.batch_size), args.repeats)
        peer = best_rate(lambda: sum(1 for _ in peer_videos(files)), args.repeats)
        scaling = [
            best_rate(lambda n=n: ours_training(pattern, n, args.batch_size, args.passes), 2)
            for n in (0, 1, 2)
        ]
        alone = side_by_side(pattern, args.batch_size, args.passes, 1)
        together = side_by_side(pattern, args.batch_size, args.passes, 2)
    print(f"ours, in process, files -> batches of {args.batch_size}: {rate:8.0f} videos/s")
    print(f"tfrecord package, files -> arrays:             {peer:8.0f} videos/s")
    print(f"ratio ours / tfrecord package: {rate / peer:.1f}x (target >= 5x)")
    print(f"{args.passes} shuffled passes (training mode):")
    for readers, videos_s in enumerate(scaling):
        print(f"  ours, {readers} worker process(es): {videos_s:8.0f} videos/s")
    print(f"scaling from 1 to 2 workers: {scaling[2] / scaling[1]:.2f}x of 2")
    print(
        f"the machine's own scaling: 2 independent in-process readers side by side "
        f"{together[0]:.0f} + {together[1]:.0f} videos/s against {alone[0]:.0f} alone: "
        f"{sum(together) / alone[0]:.2f}x"
    )


if __name__ == "__main__":
    main()
