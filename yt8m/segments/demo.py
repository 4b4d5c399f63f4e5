"""`yt8m demo --task segments`: the 2019 segment task end to end, in one command.

1. a synthetic segment-rated dataset (`yt8m.segments.synthetic`: train videos with
   video-level labels, rated validate and test splits, a whitelist),
2. a seed model (gated NetVLAD unless ``--model``, scaled down as `yt8m demo` does)
   trained on the video-level labels of train,
3. its segment submission for test (`yt8m infer --segment_labels`) scored against the
   test ratings (`yt8m score-segments`): MAP@K,
4. fine-tuned on the rated segments of validate (``--segment_labels --start_from``),
5. scored again the same way,
6. one table: stage, steps, MAP@K, the rated pairs the submission found, seconds.

Every step runs the same code as the corresponding `yt8m` command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from yt8m import inference, train
from yt8m.demo import SMALL_SIZES, SYNTHETIC_FEATURE_SIZES, UNLIMITED_EPOCHS, DemoError, model_argv
from yt8m.flags import parse_flags
from yt8m.seed_models import SEED_MODELS
from yt8m.segments.ground_truth import read_rated_pairs
from yt8m.segments.score import score_submission
from yt8m.segments.synthetic import whitelist_path, write_segment_dataset
from yt8m.segments.whitelist import read_segment_label_ids

FRAMES = (20, 40)  # per synthetic video: 4-8 segments, about 5 of them rated


def _argv_for(args: argparse.Namespace) -> tuple[list[str], str]:
    """The chosen seed model's flags at the demo's size, on the synthetic data."""
    matches = [m for n, m in enumerate(SEED_MODELS, 1) if args.model in (str(n), m.train_dir)]
    if not matches:
        names = ", ".join(f"{n} {m.train_dir}" for n, m in enumerate(SEED_MODELS, start=1))
        raise DemoError(f"--model: no seed model {args.model!r}; the seven are: {names}")
    shared = argparse.Namespace(
        full_size=False,
        learning_rate=args.learning_rate,
        classes=args.classes,
        data_dir=None,
        seed=args.seed,
        recalibrate_batch_norm=args.recalibrate_batch_norm,
    )
    return [*model_argv(matches[0], shared), f"--max_frames={FRAMES[1]}"], matches[0].title


def _score(
    common: list[str], train_dir: Path, splits: dict, out: Path, k: int
) -> tuple[float, int]:
    """MAP@k and rated pairs found of `train_dir`'s submission for the test split."""
    path = out / "submissions" / f"segments-{train_dir.name}.csv.gz"
    inference.infer(
        parse_flags(
            [
                *common,
                f"--train_dir={train_dir}",
                f"--input_data_pattern={splits['test']}",
                f"--output_file={path}",
                "--segment_labels",
                f"--segment_label_ids_file={splits['whitelist']}",
                f"--segment_max_pred={k}",
                "--batch_size=1024",
            ],
            "infer",
        )
    )
    classes = read_segment_label_ids(splits["whitelist"], splits["classes"])
    truth = read_rated_pairs(splits["test"])
    score = score_submission(
        str(path), truth, top_n=k, classes=classes, num_classes=splits["classes"]
    )
    return score.result.map, score.result.rated_pairs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="yt8m demo --task segments", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", default="demo_segments", help="where everything goes")
    parser.add_argument("--model", default="1", help="seed model: number 1-7 or train_dir name")
    parser.add_argument("--steps", type=int, default=1000, help="pretraining steps (video labels)")
    parser.add_argument("--finetune_steps", type=int, default=300, help="steps on rated segments")
    parser.add_argument("--finetune_batch_size", type=int, default=128, help="segments a step")
    parser.add_argument("--videos", type=int, default=4000, help="synthetic training videos")
    parser.add_argument("--classes", type=int, default=40, help="synthetic vocabulary")
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--finetune_learning_rate", type=float, default=0.001)
    parser.add_argument("--recalibrate_batch_norm", type=int, default=20)
    parser.add_argument("--segment_max_pred", type=int, default=100_000, help="K of MAP@K")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    common, title = _argv_for(args)  # an unknown model fails before any work
    out = Path(args.output)
    held_out = max(args.videos // 4, 1)
    print(
        f"[1/6] synthetic segment data: {args.videos} training videos (video labels), "
        f"{held_out} rated validation and {held_out} rated test videos, {args.classes} "
        f"classes, {FRAMES[0]}-{FRAMES[1]} frames, about 5 rated 5-frame segments a video "
        f"-> {out / 'data'}",
        flush=True,
    )
    patterns = write_segment_dataset(
        out / "data",
        videos={"train": args.videos, "validate": held_out, "test": held_out},
        classes=args.classes,
        frames=FRAMES,
        feature_sizes=SYNTHETIC_FEATURE_SIZES,
        seed=args.seed,
        overwrite=True,  # the demo's own folder: a run replaces the previous run's data
    )["frame"]
    splits = {**patterns, "whitelist": str(whitelist_path(out / "data")), "classes": args.classes}
    pretrained, finetuned = out / "train" / "pretrained", out / "train" / "finetuned"
    scaled = " ".join(f"{name}={size}" for name, size in SMALL_SIZES.items())
    print(f"[2/6] {title} ({scaled}), {args.steps} steps on video labels", flush=True)
    started = time.perf_counter()
    train.train(
        parse_flags(
            [
                *common,
                f"--train_dir={pretrained}",
                f"--train_data_pattern={splits['train']}",
                f"--max_steps={args.steps}",
                "--start_new_model",
            ],
            "train",
        )
    )
    seconds = [time.perf_counter() - started]
    print("[3/6] segment submission for test, scored against its ratings", flush=True)
    scores = [_score(common, pretrained, splits, out, args.segment_max_pred)]
    print(f"[4/6] fine-tuning {args.finetune_steps} steps on validate's rated segments", flush=True)
    started = time.perf_counter()
    tuned = [a for a in common if not a.startswith(("--batch_size=", "--base_learning_rate="))]
    train.train(
        parse_flags(
            [
                *tuned,
                f"--train_dir={finetuned}",
                f"--train_data_pattern={splits['validate']}",
                "--segment_labels",
                f"--start_from={pretrained}",
                f"--batch_size={args.finetune_batch_size}",
                f"--base_learning_rate={args.finetune_learning_rate}",
                f"--max_steps={args.finetune_steps}",
                f"--num_epochs={UNLIMITED_EPOCHS}",
                "--start_new_model",
            ],
            "train",
        )
    )
    seconds.append(time.perf_counter() - started)
    print("[5/6] the fine-tuned model's submission, scored again", flush=True)
    scores.append(_score(common, finetuned, splits, out, args.segment_max_pred))
    rows = [
        ("pretrained on video labels (train)", args.steps),
        ("fine-tuned on rated segments (validate)", args.finetune_steps),
    ]
    k = args.segment_max_pred
    print(f"\n[6/6] segment MAP@{k} on the rated test split\n")
    print(_table(rows, scores, seconds, k))
    print(f"\nsubmissions: {out / 'submissions'}\ncheckpoints: {out / 'train'}")
    return 0


def _table(rows, scores, seconds, k) -> str:
    width = max(len(title) for title, _ in rows)
    head = f"{'stage':<{width}}  {'steps':>6}  {'MAP@' + str(k):>11}  {'rated pairs found':>17}  {'seconds':>7}"
    lines = [head]
    for (title, steps), (value, found), secs in zip(rows, scores, seconds, strict=True):
        lines.append(f"{title:<{width}}  {steps:>6}  {value:>11.4f}  {found:>17,}  {secs:>7.0f}")
    return "\n".join(lines)
