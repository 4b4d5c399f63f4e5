"""`yt8m demo`: the whole WILLOW pipeline, end to end, in one command.

1. a synthetic YouTube-8M dataset in the real format, with fewer classes, frames and
   features than the real data (or `--data_dir` with real data),
2. the seven seed models trained with the seed's flags (cluster and hidden sizes scaled
   down unless `--full_size`), and a frame-averaging logistic baseline,
3. each evaluated on the validation split (GAP, mAP, Hit@1, PERR),
4. each model's test predictions written as a Kaggle submission file,
5. the seven averaged with equal weights (the seed's last step) and with weights fitted
   on half of the validation videos, scored on that half and on the other half (videos the
   weights were not fitted on),
6. one table: model (named with the sizes built, e.g. "Gated NetVLAD (16 clusters; the
   seed's 256)"), parameters, GAP, Hit@1, seconds, plus the ensembles.

Every step runs the same code as the corresponding `yt8m` command.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from yt8m import ensemble, evaluate, inference, train
from yt8m.data.synthetic import write_dataset
from yt8m.data.tfrecord import expand_pattern
from yt8m.errors import YT8MError
from yt8m.flags import parse_flags
from yt8m.seed_models import SEED_MODELS, SeedModel

# Scaled-down sizes for a 2-core machine; the seed's values are in seed_models.py.
SMALL_SIZES = {
    "--netvlad_cluster_size": 16,
    "--netvlad_hidden_size": 64,
    "--fv_cluster_size": 8,
    "--fv_hidden_size": 64,
    "--dbof_cluster_size": 128,
    "--dbof_hidden_size": 64,
    "--gru_cells": 64,
    "--lstm_cells": 64,
}
ITERATIONS_DIVISOR = 10  # frames sampled per video: the seed's 300 -> 30, 150 -> 15
# The synthetic data: frames per video (the real data: up to 300) and the sizes of the
# rgb/audio features (the real data: 1024,128), passed on as --feature_sizes.
SYNTHETIC_FRAMES = (10, 30)
SYNTHETIC_FEATURE_SIZES = (128, 32)
UNLIMITED_EPOCHS = 10**6  # the demo's runs stop at --steps
HOLDOUT = 0.5  # of the validation videos: kept out of the ensemble fit, scored apart

BASELINE = SeedModel(
    "Baseline: logistic on averaged frames",
    "baseline-frame-level-logistic",
    '--model=FrameLevelLogisticModel --frame_features=True --feature_names="rgb,audio" '
    '--feature_sizes="1024,128" --batch_size=128',
    0,
)


class DemoError(YT8MError):
    """A demo step that cannot run; the message says which and why."""


@dataclass
class Row:
    title: str
    parameters: int | None
    gap: float
    hit_at_one: float
    seconds: float


def _splits(args: argparse.Namespace, out: Path) -> dict[str, str]:
    """The frame-level glob of each split: the user's real data, or a new synthetic set."""
    if args.data_dir:
        root = Path(args.data_dir)
        splits = {s: str(root / f"{s}*.tfrecord") for s in ("train", "validate", "test")}
        for pattern in splits.values():
            expand_pattern(pattern)  # a missing split fails now, naming the pattern
        return splits
    held_out = args.videos // 4
    low, high = SYNTHETIC_FRAMES
    print(
        f"[1/6] synthetic dataset: {args.videos} training, {held_out} validation and "
        f"{held_out} test videos, {args.classes} classes, {low}-{high} frames of "
        f"{'+'.join(map(str, SYNTHETIC_FEATURE_SIZES))} features (scaled down from the real "
        f"data's 4716 classes, up to 300 frames of 1024+128 features) -> {out / 'data'}",
        flush=True,
    )
    patterns = write_dataset(
        out / "data",
        videos={"train": args.videos, "validate": held_out, "test": held_out},
        classes=args.classes,
        frames=SYNTHETIC_FRAMES,
        feature_sizes=SYNTHETIC_FEATURE_SIZES,
        levels=("frame",),
        seed=args.seed,
        overwrite=True,  # the demo's own folder: a run replaces the previous run's data
    )
    return patterns["frame"]


def _scaled_down(arg: str) -> str:
    """One seed flag at the demo's size: smaller clusters, hidden layers and frame samples."""
    name, _, value = arg.partition("=")
    if name in SMALL_SIZES:
        return f"{name}={SMALL_SIZES[name]}"
    if name == "--iterations":
        return f"{name}={max(int(value) // ITERATIONS_DIVISOR, 1)}"
    return arg


def _data_flags(args: argparse.Namespace) -> list[str]:
    """The flags that describe the data: the synthetic set's feature sizes and frame count
    (the seed's --feature_sizes="1024,128" is the real data's); training as long as --steps."""
    flags = [f"--num_classes={args.classes}", f"--num_epochs={UNLIMITED_EPOCHS}"]
    if not args.data_dir:
        sizes = ",".join(map(str, SYNTHETIC_FEATURE_SIZES))
        flags += [f"--feature_sizes={sizes}", f"--max_frames={SYNTHETIC_FRAMES[1]}"]
    return flags


def model_argv(model: SeedModel, args: argparse.Namespace) -> list[str]:
    """The seed's flags for `model`, scaled down unless --full_size, on the demo's data."""
    argv = model.training_argv()
    if not args.full_size:
        argv = [_scaled_down(arg) for arg in argv]
        given = {arg.split("=", 1)[0] for arg in argv}  # e.g. the seed's LSTM keeps 1024 cells
        argv += [f"{name}={size}" for name, size in SMALL_SIZES.items() if name not in given]
    if args.learning_rate:
        argv = [a for a in argv if not a.startswith("--base_learning_rate=")]
        argv.append(f"--base_learning_rate={args.learning_rate}")
    data = _data_flags(args)
    data_names = {flag.split("=", 1)[0] for flag in data}
    return [
        *(a for a in argv if a.split("=", 1)[0] not in data_names),
        *data,
        f"--seed={args.seed}",
        f"--recalibrate_batch_norm={args.recalibrate_batch_norm}",
        "--num_readers=1",
    ]


def _run_model(
    model: SeedModel, args: argparse.Namespace, splits: dict[str, str], out: Path
) -> tuple[Row, str, str]:
    """Train, evaluate and predict with one model; returns its row and its two CSVs."""
    train_dir = out / "train" / model.train_dir
    common = [*model_argv(model, args), f"--train_dir={train_dir}"]
    title = model.title_for(parse_flags(common))
    started = time.perf_counter()
    trained = train.train(
        parse_flags(
            [
                *common,
                f"--train_data_pattern={splits['train']}",
                f"--max_steps={args.steps}",
                "--start_new_model",
            ],
            "train",
        )
    )
    parameters = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    seconds = time.perf_counter() - started
    (result,) = evaluate.evaluate(
        parse_flags([*common, f"--eval_data_pattern={splits['validate']}", "--run_once"], "eval")
    )
    predictions = {}
    for split, folder in (("validate", "validate_predictions"), ("test", "submissions")):
        path = out / folder / f"{split}-{model.train_dir}.csv"
        inference.infer(
            parse_flags(
                [
                    *common,
                    f"--input_data_pattern={splits[split]}",
                    f"--output_file={path}",
                    "--top_k=50",
                    "--batch_size=256",
                ],
                "infer",
            )
        )
        predictions[split] = str(path)
    row = Row(title, parameters, result["gap"], result["hit_at_one"], seconds)
    return row, predictions["validate"], predictions["test"]


def _ensembles(
    validate_csvs: list[str], test_csvs: list[str], splits: dict[str, str], args, out: Path
) -> list[Row]:
    """Equal weights (GAP on validate) and weights fitted on part of validate (GAP on that
    part and on the held-out rest); submissions for test."""
    submissions = out / "submissions"
    weights = out / "ensemble_weights.json"
    ensemble.ensemble_main(
        [
            "fit",
            *validate_csvs,
            f"--labels_pattern={splits['validate']}",
            f"--num_classes={args.classes}",
            f"--output={weights}",
            f"--holdout={HOLDOUT}",
        ]
    )
    ensemble.average_main(
        [*test_csvs, f"--output_file={submissions / 'WILLOW_submission.csv'}", "--no_progress"]
    )
    ensemble.ensemble_main(
        [
            "apply",
            *test_csvs,
            f"--weights={weights}",
            f"--output_file={submissions / 'WILLOW_fitted_submission.csv'}",
        ]
    )
    report = json.loads(weights.read_text())
    fitted, held = report["num_fitted_videos"], report["holdout"]["num_videos"]
    nan = float("nan")
    return [
        Row("Ensemble, equal weights (the seed's)", None, report["equal_weight_gap"], nan, 0.0),
        Row(
            f"Ensemble, fitted weights: {fitted} videos fitted on",
            None,
            report["fitted_gap"],
            nan,
            0.0,
        ),
        Row(
            f"Ensemble, fitted weights: {held} held-out videos",
            None,
            report["holdout"]["fitted_gap"],
            nan,
            0.0,
        ),
    ]


def _table(rows: list[Row]) -> str:
    width = max(len(r.title) for r in rows)
    lines = [f"{'model':<{width}}  {'parameters':>11}  {'GAP':>6}  {'Hit@1':>6}  {'seconds':>7}"]
    for r in rows:
        params = f"{r.parameters:,}" if r.parameters is not None else "-"
        hit = f"{r.hit_at_one:.4f}" if r.hit_at_one == r.hit_at_one else "-"
        secs = f"{r.seconds:.0f}" if r.seconds else "-"
        lines.append(f"{r.title:<{width}}  {params:>11}  {r.gap:.4f}  {hit:>6}  {secs:>7}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", choices=("videos", "segments"), default="videos")
    chosen, rest = task.parse_known_args(argv)
    if chosen.task == "segments":  # the 2019 segment task; it reuses this module's pieces
        from yt8m.segments.demo import main as segments_demo

        return segments_demo(rest)
    parser = argparse.ArgumentParser(prog="yt8m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task",
        choices=("videos", "segments"),
        default="videos",
        help="segments: the 2019 segment task (`yt8m demo --task segments --help`)",
    )
    parser.add_argument("--output", default="demo_output", help="where everything goes")
    parser.add_argument("--data_dir", help="real frame-level data: train*/validate*/test*.tfrecord")
    parser.add_argument("--full_size", action="store_true", help="the seed's model sizes")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per model")
    parser.add_argument("--videos", type=int, default=4000, help="synthetic training videos")
    parser.add_argument(
        "--classes", type=int, help="vocabulary (default: 50 synthetic, 4716 with --data_dir)"
    )
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=0.01,
        help="instead of the seed's 0.0002, made for 300,000+ steps (0: the seed's)",
    )
    parser.add_argument(
        "--recalibrate_batch_norm",
        type=int,
        default=20,
        help="batches to re-estimate batch-norm statistics on after a short run (0: off)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", help="comma-separated train_dir names or numbers 1-7 (default: all seven)"
    )
    args = parser.parse_args(argv)
    if args.classes is None:
        args.classes = 4716 if args.data_dir else 50
    out = Path(args.output)
    models = _select(args.models)
    sizes = (
        "the seed's sizes"
        if args.full_size
        else f"cluster/hidden sizes scaled down, 1/{ITERATIONS_DIVISOR} of the sampled frames"
    )
    if args.learning_rate:
        sizes += f", learning rate {args.learning_rate}"
    if args.recalibrate_batch_norm:
        sizes += f", batch norm re-estimated on {args.recalibrate_batch_norm} batches"
    if not args.full_size:
        scaled = " ".join(f"{name}={size}" for name, size in SMALL_SIZES.items())
        print(f"scaled down for 2 CPU cores (--full_size: the seed's sizes): {scaled}", flush=True)
    splits = _splits(args, out)
    rows, validate_csvs, test_csvs = [], [], []
    for number, model in enumerate([*models, BASELINE], start=1):
        print(
            f"[2-4/6] model {number}/{len(models) + 1}: "
            f"{model.title_for(parse_flags(model_argv(model, args)))} ({sizes}, "
            f"{args.steps} steps): train, evaluate on validate, predict test",
            flush=True,
        )
        row, validate_csv, test_csv = _run_model(model, args, splits, out)
        rows.append(row)
        if model is not BASELINE:
            validate_csvs.append(validate_csv)
            test_csvs.append(test_csv)
    print(
        f"[5/6] ensembles: equal weights, and weights fitted on {1 - HOLDOUT:.0%} of the "
        f"validation videos (scored on those and on the {HOLDOUT:.0%} held out)",
        flush=True,
    )
    rows[-1:-1] = _ensembles(validate_csvs, test_csvs, splits, args, out)
    print(f"\n[6/6] validation results ({sizes}, {args.steps} training steps per model)\n")
    print(_table(rows))
    print(
        f"\nsubmissions:  {out / 'submissions'}\n"
        f"checkpoints:  {out / 'train'}/<model>\n"
        f"TensorBoard:  tensorboard --logdir {out / 'train'}"
    )
    return 0


def _select(spec: str | None) -> list[SeedModel]:
    if not spec:
        return list(SEED_MODELS)
    chosen = []
    for item in spec.split(","):
        item = item.strip()
        matches = [
            m for number, m in enumerate(SEED_MODELS, start=1) if item in (str(number), m.train_dir)
        ]
        if not matches:
            names = ", ".join(f"{n} {m.train_dir}" for n, m in enumerate(SEED_MODELS, start=1))
            raise DemoError(f"--models: no seed model {item!r}; the seven are: {names}")
        chosen += matches
    return chosen
