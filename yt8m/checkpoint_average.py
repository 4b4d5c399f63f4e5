"""`yt8m average-checkpoints`: the linear average of checkpoints of one run.

    yt8m average-checkpoints DIR --steps=60000,70000,80000 [--output_dir=OUT]
    yt8m average-checkpoints DIR --last=3

Every floating tensor of the model's state is the mean over the chosen checkpoints:
the weights and also the batch-norm running statistics, which are *averaged*, not
re-estimated (as miha-skalic/youtube8mchallenge's weights_average.py averaged every
variable; successors.md §3). Integer buffers (``num_batches_tracked``) are the newest
checkpoint's. When every checkpoint holds an EMA of the weights (``--ema_decay``), the
EMAs are averaged the same way. Sums are taken in float64 and rounded once.

The result is written by `yt8m.checkpoint.save_checkpoint` into OUT (default
``DIR/averaged``) as ``model.ckpt-STEP.pt``, STEP being the newest step averaged, with the
newest checkpoint's flags, no optimizer state and ``training_state["averaged_steps"]``:
a train_dir that `yt8m eval`, `yt8m infer` and `yt8m export` accept. OUT may not be DIR
itself (the average would replace the training checkpoint of its step, optimizer state and
all, and `train` would resume from it); replacing an earlier average is said.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from yt8m.checkpoint import (
    Checkpoint,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from yt8m.errors import YT8MError
from yt8m.models.registry import build_model


class AveragingError(YT8MError):
    """Checkpoints that cannot be averaged: missing steps, other models."""


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of every floating tensor of `states` (same names and shapes); other
    tensors are the last state's."""
    names = states[-1].keys()
    for state in states:
        if state.keys() != names:
            raise AveragingError("the checkpoints hold different tensors: not one model")
    averaged = {}
    for name, newest in states[-1].items():
        if not newest.is_floating_point():
            averaged[name] = newest.clone()
            continue
        total = torch.zeros(newest.shape, dtype=torch.float64)
        for state in states:
            if state[name].shape != newest.shape:
                raise AveragingError(f"tensor {name} has different shapes: not one model")
            total += state[name].to(torch.float64)
        averaged[name] = (total / len(states)).to(newest.dtype)
    return averaged


def choose_steps(train_dir: str | Path, steps: list[int] | None, last: int | None) -> list[Path]:
    """The checkpoint files of `steps`, or of the `last` newest, oldest first."""
    found = list_checkpoints(train_dir)
    if steps:
        return [find_checkpoint(train_dir, step) for step in sorted(set(steps))]
    if not found:
        find_checkpoint(train_dir)  # the error naming what the directory holds
    if last is None or last < 1:
        raise AveragingError("give --steps=S1,S2,... or --last=N (N >= 1)")
    if last > len(found):
        have = ", ".join(str(s) for s, _ in found)
        raise AveragingError(
            f"--last={last}: train_dir {str(train_dir)!r} has {len(found)} checkpoints ({have})"
        )
    return [path for _, path in found[-last:]]


def average_checkpoints(
    train_dir: str | Path,
    steps: list[int] | None = None,
    last: int | None = None,
    output_dir: str | Path | None = None,
) -> Path:
    """Average the chosen checkpoints of `train_dir`; returns the checkpoint written."""
    checkpoints: list[Checkpoint] = [
        load_checkpoint(p) for p in choose_steps(train_dir, steps, last)
    ]
    newest = checkpoints[-1]
    output = Path(output_dir or Path(train_dir) / "averaged")
    target = output / newest.path.name
    if output.resolve() == Path(train_dir).resolve():
        raise AveragingError(
            f"--output_dir={output} is the train_dir: the average would replace "
            f"{target.name}, a training checkpoint; give another folder (default: "
            f"{Path(train_dir) / 'averaged'})"
        )
    if target.exists():
        print(f"replacing the existing {target}", file=sys.stderr)
    for checkpoint in checkpoints[:-1]:
        differences = newest.flags.model_differences(checkpoint.flags)
        if differences:
            listed = ", ".join(f"--{name}" for name, _, _ in differences)
            raise AveragingError(
                f"{checkpoint.path} and {newest.path} are different models ({listed} differ)"
            )
    model = build_model(newest.flags)
    model.load_state_dict(average_states([c.model_state for c in checkpoints]))
    emas = [c.ema_state for c in checkpoints]
    ema = average_states(emas) if all(e is not None for e in emas) else None
    averaged_steps = [c.step for c in checkpoints]
    return save_checkpoint(
        output,
        newest.step,
        model,
        newest.flags,
        training_state={"averaged_steps": averaged_steps, "source": str(train_dir)},
        ema_state=ema,
    )


def _steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated steps, not {text!r}") from None


def main(argv: list[str]) -> int:
    """`yt8m average-checkpoints DIR (--steps=S1,S2,... | --last=N) [--output_dir=OUT]`."""
    parser = argparse.ArgumentParser(
        prog="yt8m average-checkpoints",
        description="Average checkpoints of one run into a new checkpoint (batch-norm "
        "statistics averaged too).",
    )
    parser.add_argument("train_dir")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--steps", type=_steps, help="comma-separated steps to average")
    choice.add_argument("--last", type=int, help="average the N newest checkpoints")
    parser.add_argument("--output_dir", help="where to write (default: TRAIN_DIR/averaged)")
    args = parser.parse_args(argv)
    path = average_checkpoints(args.train_dir, args.steps, args.last, args.output_dir)
    print(f"wrote {path}")
    return 0
