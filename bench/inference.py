"""Inference speed, videos/s, from frame-level TFRecords to a submission CSV.

A small NetVLADModelLF (the seed's gated NetVLAD at reduced size: 32 clusters, hidden
256, context gating, gated MoE over the full 4,716-class vocabulary, 300 sampled
frames) is saved untrained and runs `yt8m infer` on a synthetic test split in the
real format (1024 + 128 uint8 features per frame, 60 to 300 frames per video).

Figures, each the best of `--repeats` runs:
* ``infer csv`` / ``infer csv.gz``: the whole command (restore, read, decode, model,
  top-k, formatting, atomic write) in this process;
* peer ``reader``: the same loader alone (read + CRC + decode + batch), the most the
  command could do with an infinitely fast model;
* peer ``model``: the model alone (inputs + forward) on batches already in memory.
The ratios say which of the two bounds the command is held by.

Usage::

    .venv/bin/python bench/inference.py                  # 1024 videos, batch 256
    .venv/bin/python bench/inference.py --videos 256 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yt8m.checkpoint import save_checkpoint  # noqa: E402
from yt8m.data.loader import make_loader  # noqa: E402
from yt8m.data.synthetic import write_dataset  # noqa: E402
from yt8m.flags import parse_flags  # noqa: E402
from yt8m.inference import infer  # noqa: E402
from yt8m.models.registry import build_model  # noqa: E402

MODEL_ARGS = [
    "--model=NetVLADModelLF",
    "--frame_features=True",
    "--feature_names=rgb,audio",
    "--feature_sizes=1024,128",
    "--netvlad_cluster_size=32",
    "--netvlad_hidden_size=256",
    "--netvlad_relu=False",
    "--gating=True",
    "--moe_prob_gating=True",
    "--iterations=300",
]


def best_rate(run, videos: int, repeats: int) -> float:
    """The best videos/s of `repeats` calls of `run()`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return videos / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_readers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        pattern = write_dataset(
            work / "data", videos={"test": args.videos}, shards=4, levels=("frame",)
        )["frame"]["test"]
        run_args = [
            f"--train_dir={work / 'train'}",
            f"--input_data_pattern={pattern}",
            f"--batch_size={args.batch_size}",
            f"--num_readers={args.num_readers}",
            "--device=cpu",
            "--noprogress",
        ]
        flags = parse_flags(MODEL_ARGS + run_args, "infer")
        torch.manual_seed(0)
        model = build_model(flags).eval()
        save_checkpoint(flags.train_dir, 1, model, flags)

        def run_infer(name: str) -> None:
            infer(parse_flags(MODEL_ARGS + run_args + [f"--output_file={work / name}"], "infer"))

        def run_reader() -> None:
            for _ in make_loader(flags, pattern, training=False):
                pass

        batches = list(make_loader(flags, pattern, training=False))

        def run_model() -> None:
            with torch.inference_mode():
                for batch in batches:
                    model(batch["inputs"], batch["num_frames"])

        rates = {
            "infer csv": best_rate(lambda: run_infer("sub.csv"), args.videos, args.repeats),
            "infer csv.gz": best_rate(lambda: run_infer("sub.csv.gz"), args.videos, args.repeats),
            "peer reader": best_rate(run_reader, args.videos, args.repeats),
            "peer model": best_rate(run_model, args.videos, args.repeats),
        }

    print(
        f"# bench/inference.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print(f"# command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"# {args.videos} synthetic test videos (60-300 frames), batch {args.batch_size}, "
        f"{args.num_readers} reader processes, best of {args.repeats}; "
        f"model: {' '.join(MODEL_ARGS[4:])}, 4716 classes, top_k 20"
    )
    for name, rate in rates.items():
        print(f"{name:14} {rate:9.1f} videos/s")
    print(f"infer csv / peer reader: {rates['infer csv'] / rates['peer reader']:.2f}")
    print(f"infer csv / peer model:  {rates['infer csv'] / rates['peer model']:.2f}")


if __name__ == "__main__":
    main()
