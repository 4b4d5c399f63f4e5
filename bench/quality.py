"""Do the seed's models learn? Validation GAP after a fixed budget, against averaging.

A synthetic dataset (`yt8m synth`'s generator: class evidence partly in the frames' mean,
partly in how frames swing around it) is written to a temporary directory. Each of the
seed's seven training commands is run through `yt8m.train.train` with its own flags,
except for sizes reduced so the whole table takes minutes on 2 CPU cores (`REDUCED`,
plus the dataset's feature sizes, classes and frame count) and a learning rate of 0.01
instead of 0.0002 (made for 600,000 steps, not a few hundred). Each trains for the same
number of steps at its seed batch size. The baseline, a frame-averaging logistic model
(``FrameLevelLogisticModel``: logistic regression on the mean of the frames), trains as
many steps at the largest seed batch size (128) with the best of `BASELINE_RATES`, so it
never sees fewer examples than a seed model.

Validation GAP (top 20, fidelity.md §6) is measured on the validation split with the
checkpoint restored from its train_dir and frames drawn at random as the original did
(seeded). Batch-norm running statistics decay by 0.999 per step as in the original, so
after a few hundred steps they are still mostly their initial values: before evaluating,
every model's are re-estimated on `RECALIBRATION_BATCHES` training batches
(``--recalibrate_batch_norm``; the baseline has none). The table gives GAP, the ratio to the baseline, and training seconds.

Usage::

    .venv/bin/python bench/quality.py                  # 1000 steps per model
    .venv/bin/python bench/quality.py --steps 100 --models netvlad,gru
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yt8m.checkpoint import restore_model  # noqa: E402
from yt8m.data.loader import make_loader  # noqa: E402
from yt8m.data.synthetic import write_dataset  # noqa: E402
from yt8m.flags import Flags, parse_flags  # noqa: E402
from yt8m.metrics import gap  # noqa: E402
from yt8m.seed_models import SEED_MODELS  # noqa: E402
from yt8m.train import train  # noqa: E402

SHORT_NAMES = ["netvlad", "netfv", "gated_dbof", "soft_dbof", "rvlad", "gru", "lstm"]
CLASSES, FEATURE_SIZES, FRAMES = 50, (128, 32), (10, 30)
TRAIN_VIDEOS, VALIDATE_VIDEOS = 4000, 600

# Sizes reduced for a 2-core CPU (seed value -> here). Everything else is the seed's.
REDUCED = (
    "--netvlad_cluster_size=16 --fv_cluster_size=8 --dbof_cluster_size=128 "
    "--netvlad_hidden_size=64 --fv_hidden_size=64 --dbof_hidden_size=64 "
    "--gru_cells=64 --lstm_cells=64 --iterations=30"
).split()
LEARNING_RATE = 0.01  # the seed's 0.0002 is made for 600,000 steps, not 1,000
DATA_FLAGS = [
    f"--feature_sizes={','.join(map(str, FEATURE_SIZES))}",
    f"--num_classes={CLASSES}",
    f"--max_frames={FRAMES[1]}",
    "--num_readers=1",
    "--progress=False",
    "--seed=0",
]
RECALIBRATION_BATCHES = 20
BASELINE = "--model=FrameLevelLogisticModel --frame_features=True --batch_size=128".split()
BASELINE_RATES = (0.01, 0.05)


def validation_gap(flags: Flags, pattern: str) -> float:
    """GAP over every validation video of the checkpoint that training with `flags` left."""
    model, checkpoint = restore_model(flags.train_dir, -1, flags, "cpu")
    generator = torch.Generator().manual_seed(0)
    predictions, labels = [], []
    with torch.no_grad():
        for batch in make_loader(checkpoint.flags, pattern, training=False, batch_size=256):
            predictions.append(model(batch["inputs"], batch["num_frames"], generator))
            labels.append(batch["labels"])
    return gap(torch.cat(predictions), torch.cat(labels))


def run(argv: list[str], train_dir: Path, patterns: dict[str, str]) -> tuple[float, float]:
    """Train `argv` in `train_dir`; returns (validation GAP, seconds)."""
    flags: Flags = parse_flags(
        [*argv, f"--train_data_pattern={patterns['train']}", f"--train_dir={train_dir}"], "train"
    )
    start = time.perf_counter()
    train(flags)
    seconds = time.perf_counter() - start
    return validation_gap(flags, patterns["validate"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per model")
    parser.add_argument("--models", default=",".join(SHORT_NAMES), help="comma-separated")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steady run times on a shared machine; this measures quality)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    chosen = args.models.split(",")
    budget = [
        f"--max_steps={args.steps}",
        "--num_epochs=1000",
        f"--export_model_steps={10**9}",
        f"--recalibrate_batch_norm={RECALIBRATION_BATCHES}",
    ]

    print(f"# bench/quality.py  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# {platform.platform()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# command: {' '.join(sys.argv)}")
    print(
        f"# data: yt8m synth, {TRAIN_VIDEOS} train / {VALIDATE_VIDEOS} validate videos, "
        f"{CLASSES} classes, {FRAMES[0]}-{FRAMES[1]} frames of {sum(FEATURE_SIZES)} features"
    )
    print(f"# budget: {args.steps} steps at learning rate {LEARNING_RATE} (baseline: best of")
    print(f"#   {BASELINE_RATES}); reduced sizes: {' '.join(REDUCED)}")
    with tempfile.TemporaryDirectory(prefix="yt8m-quality-") as tmp:
        root = Path(tmp)
        patterns = write_dataset(
            root / "data",
            videos={"train": TRAIN_VIDEOS, "validate": VALIDATE_VIDEOS},
            shards=4,
            classes=CLASSES,
            frames=FRAMES,
            feature_sizes=FEATURE_SIZES,
            levels=("frame",),
        )["frame"]

        baseline_gap, baseline_rate, baseline_seconds = 0.0, 0.0, 0.0
        for rate in BASELINE_RATES:
            argv = [*BASELINE, f"--base_learning_rate={rate}", *DATA_FLAGS, *budget]
            value, seconds = run(argv, root / f"baseline-{rate}", patterns)
            if value > baseline_gap:
                baseline_gap, baseline_rate, baseline_seconds = value, rate, seconds

        print()
        print("| model | batch | validation GAP | vs baseline | train s |")
        print("|---|---|---|---|---|")
        print(
            f"| baseline: FrameLevelLogisticModel (lr {baseline_rate}) | 128 | "
            f"{baseline_gap:.4f} | 1.00x | {baseline_seconds:.0f} |"
        )
        for name, seed in zip(SHORT_NAMES, SEED_MODELS, strict=True):
            if name not in chosen:
                continue
            argv = [*seed.training_argv(), *REDUCED, *DATA_FLAGS, *budget]
            argv.append(f"--base_learning_rate={LEARNING_RATE}")
            value, seconds = run(argv, root / name, patterns)
            batch = parse_flags(seed.training_argv()).batch_size
            print(
                f"| {seed.title} | {batch} | {value:.4f} | {value / baseline_gap:.2f}x "
                f"| {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
