"""`yt8m eval` (and the root `eval.py`): Hit@1, PERR, GAP, mAP and loss of checkpoints.

fidelity.md §6. Every video of ``--eval_data_pattern`` is predicted once by the model
rebuilt from a checkpoint (`yt8m.inference.restore_for_prediction`) and accumulated in
an `EvaluationMetrics` (memory bounded by the kept ``--top_k`` entries per video). The
loss is ``--label_loss`` on the predictions, without regularisation, as the original.

With ``--run_once`` the checkpoint ``--check_point`` (-1: the latest) is evaluated once.
Without it the command keeps watching ``--train_dir``: every ``--eval_poll_secs`` it looks
at the latest checkpoint and evaluates it if it has not evaluated that step yet, as the
original did (a checkpoint superseded while another was being evaluated is skipped).
A fixed ``--check_point`` is evaluated once.

Results of each checkpoint go to stdout (one line), to TensorBoard (``train_dir/eval``,
scalars ``eval/NAME`` at the checkpoint's step) and to ``train_dir/eval/eval-STEP.json``
(written atomically; for a file of `yt8m export` given as ``--train_dir``,
``NAME-eval/`` beside it). Metric names: ``hit_at_one``, ``perr``, ``gap``, ``map`` (the
original's: mean over all classes, a class without positives counting 0),
``map_positive_classes`` (later starter code: mean over classes with positives),
``avg_loss``, ``num_videos``. With ``--segment_labels``: MAP@K of the rated segments
(`yt8m.segments.evaluate`).

Under ``torchrun`` each rank evaluates its share of the records and rank 0 merges the
metric states, so the numbers are those of one process over the whole split (exactly,
up to float rounding of the loss, with ``--deterministic_sampling``; random frame
sampling draws differently per rank).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from yt8m.atomic import atomic_output
from yt8m.checkpoint import list_checkpoints
from yt8m.data.loader import make_loader
from yt8m.data.no_records import no_records_error, require_records
from yt8m.distributed import Process, init_distributed, shutdown
from yt8m.export import is_exported_model
from yt8m.flags import Flags, parse_flags
from yt8m.inference import PredictionError, predict, quiet_other_ranks, restore_for_prediction
from yt8m.losses import get_loss
from yt8m.metrics import EvaluationMetrics, MetricsError
from yt8m.segments.evaluate import evaluate_segments

log = logging.getLogger("yt8m.eval")

EVAL_SUBDIR = "eval"


def main(argv: list[str]) -> int:
    """`yt8m eval [--flag=value ...]`."""
    flags = parse_flags(argv, "eval")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    evaluate(flags)
    return 0


def evaluate(
    flags: Flags,
    *,
    max_evaluations: int | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> list[dict[str, Any]]:
    """Evaluate as `flags` say; return the result of every checkpoint evaluated.

    Watch mode runs until interrupted, or until `max_evaluations` checkpoints were
    evaluated; `sleep` waits between looks at train_dir. Every rank of a torchrun job
    calls it; rank 0 reports.
    """
    if not flags.eval_data_pattern:
        raise PredictionError("--eval_data_pattern is empty: give the glob of the TFRecords")
    require_records("--eval_data_pattern", flags.eval_data_pattern)  # before any checkpoint
    get_loss(flags.label_loss)  # an unknown loss fails before any work
    process = init_distributed(flags.device)
    try:
        quiet_other_ranks(process)
        if flags.run_once or flags.check_point >= 0 or is_exported_model(flags.train_dir):
            return [evaluate_checkpoint(flags, flags.check_point, process)]
        return _watch(flags, process, max_evaluations, sleep)
    finally:
        shutdown(process)


def _watch(
    flags: Flags,
    process: Process,
    max_evaluations: int | None,
    sleep: Callable[[float], Any],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    last_step = None
    waiting_logged = False
    while max_evaluations is None or len(results) < max_evaluations:
        step = _latest_step(flags.train_dir, process)
        if step is not None and step != last_step:
            results.append(evaluate_checkpoint(flags, step, process))
            last_step, waiting_logged = step, False
            continue
        if not waiting_logged:
            log.info("waiting for a new checkpoint in %s", flags.train_dir)
            waiting_logged = True
        sleep(flags.eval_poll_secs)
    return results


def _latest_step(train_dir: str, process: Process) -> int | None:
    """The latest checkpoint's step as rank 0 sees it (the same on every rank), or None."""
    found = [None]
    if process.is_main:
        checkpoints = list_checkpoints(train_dir)
        found[0] = checkpoints[-1][0] if checkpoints else None
    if process.distributed:
        dist.broadcast_object_list(found, src=0)
    return found[0]


def evaluate_checkpoint(flags: Flags, check_point: int, process: Process) -> dict[str, Any]:
    """Evaluate the checkpoint of step `check_point` (-1: latest) over the whole split.

    Rank 0 returns the metrics (`EvaluationMetrics.get`) with ``step`` and ``checkpoint``,
    and prints, logs to TensorBoard and writes the JSON file; other ranks return {}.
    """
    if flags.segment_labels:  # the 2019 segment task: MAP@K (yt8m.segments.evaluate)
        return evaluate_segments(flags, check_point, process, _report)
    model, checkpoint, data_flags = restore_for_prediction(flags, check_point, process)
    log.info("evaluating %s (step %d)", checkpoint.path, checkpoint.step)
    loader = make_loader(
        data_flags,
        flags.eval_data_pattern,
        training=False,
        rank=process.rank,
        world_size=process.world_size,
        pin_memory=process.device.type == "cuda",
    )
    label_loss = get_loss(flags.label_loss, flags.alpha)
    metrics = EvaluationMetrics(data_flags.num_classes, flags.top_k)
    for batch, probabilities in predict(model, loader, flags, process, "eval"):
        labels = batch["labels"]  # both on the host: the device computes the next batch
        metrics.accumulate(probabilities, labels, label_loss(probabilities, labels))
    metrics = _merged(metrics, process)
    if not process.is_main:
        return {}
    try:
        numbers = metrics.get()
    except MetricsError:  # no video at all (every record skipped as corrupt)
        raise no_records_error("--eval_data_pattern", flags.eval_data_pattern) from None
    result = {"step": checkpoint.step, "checkpoint": str(checkpoint.path), **numbers}
    _report(flags, result)
    return result


def _merged(metrics: EvaluationMetrics, process: Process) -> EvaluationMetrics:
    """On rank 0: the metrics of all ranks together; elsewhere: this rank's own."""
    if not process.distributed:
        return metrics
    gathered = [None] * process.world_size if process.is_main else None
    dist.gather_object(metrics, gathered, dst=0)
    if not process.is_main:
        return metrics
    total = EvaluationMetrics(metrics.num_classes, metrics.top_k)
    for part in gathered:
        total.merge(part)
    return total


def _report(flags: Flags, result: dict[str, Any]) -> None:
    """Print one line, add TensorBoard scalars and write ``eval-STEP.json``."""
    from torch.utils.tensorboard import SummaryWriter

    step = result["step"]
    numbers = {k: v for k, v in result.items() if k not in ("step", "checkpoint")}
    print(
        f"eval step {step}: " + " ".join(f"{k}={_format(v)}" for k, v in numbers.items()),
        flush=True,
    )
    directory = Path(flags.train_dir) / EVAL_SUBDIR
    if is_exported_model(flags.train_dir):  # DIR/NAME.safetensors: DIR/NAME-eval
        directory = Path(flags.train_dir).with_name(Path(flags.train_dir).stem + "-eval")
    writer = SummaryWriter(str(directory))
    for name, value in numbers.items():
        writer.add_scalar(f"eval/{name}", value, step)
    writer.close()
    record = {
        **result,
        "eval_data_pattern": flags.eval_data_pattern,
        "top_k": flags.top_k,
        "label_loss": flags.label_loss,
        "deterministic_sampling": flags.deterministic_sampling,
        "batch_norm_statistics": flags.batch_norm_statistics,
        "seed": flags.seed,
    }
    with atomic_output(directory / f"eval-{step}.json") as out:
        json.dump(record, out, indent=1)
        out.write("\n")


def _format(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)
