"""`yt8m train` (and the root `train.py`): the original's training, read top to bottom.

One step (fidelity.md §5): uint8 frames go to the device and into the model, which
samples its frames from a generator seeded by (seed, rank, step) and transforms the
sampled rows (dequantized, L2-normalised: `yt8m.data.features`); the loss is the label loss plus
``regularization_penalty * model.regularization_loss()`` (L2 on the MoE weights).
Adam then applies each gradient tensor clipped on its own, with the staircase
learning rate of the examples seen so far.

Training stops at ``--max_steps`` or when the data of ``--num_epochs`` passes runs
out on any rank. Checkpoints (`yt8m.checkpoint`) are written every
``--export_model_steps`` steps, every ``--save_checkpoint_secs`` seconds and at the
end. ``--start_new_model`` deletes train_dir's checkpoints and TensorBoard events
(nothing else) and starts over; without it the latest checkpoint is resumed, and the run then
continues exactly as if it had never stopped: the loader skips the batches already
used (``start_batch``), frame sampling depends only on the step, and the optimizer
and random states come back from the checkpoint. Model flags come from the
checkpoint being resumed (a differing command line value gives a warning);
training flags come from the command line.

Under ``torchrun`` every rank trains a DistributedDataParallel replica on its own
shards; rank 0 alone writes checkpoints and TensorBoard logs.

Nothing is lost or silently wrong (`yt8m.stopping`, `yt8m.resume`,
`yt8m.data.no_records`): SIGINT/SIGTERM end the run after a checkpoint of the last
finished step (exit 130/143; the same command resumes), a damaged latest checkpoint is set
aside for the newest good one, a resume with another ``--batch_size`` is refused, and
training data without a record is an error before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from yt8m.batchnorm import recalibrate_batch_norm
from yt8m.checkpoint import (
    Checkpoint,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
    warn_flag_differences,
)
from yt8m.data.loader import make_loader
from yt8m.data.no_records import no_records_error, require_records
from yt8m.distributed import (
    Process,
    all_ranks_true,
    broadcast_buffers,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from yt8m.errors import YT8MError
from yt8m.flags import Flags, parse_flags
from yt8m.losses import get_loss
from yt8m.metrics import gap, hit_at_one
from yt8m.models.registry import build_model
from yt8m.optim import (
    build_optimizer,
    check_optimizer_name,
    clip_per_tensor_,
    learning_rate,
    set_learning_rate,
)
from yt8m.resume import check_resumable, newest_good_checkpoint
from yt8m.stopping import StopRequest

log = logging.getLogger("yt8m.train")

METRICS_EVERY = 10  # steps between GAP / Hit@1 of the training batch (a device-to-host copy)


class TrainingError(YT8MError):
    """Training cannot go on: a non-finite loss, or flags that cannot train."""


def main(argv: list[str]) -> int:
    """`yt8m train [--flag=value ...]`."""
    flags = parse_flags(argv, "train")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with logging_redirect_tqdm():
        train(flags)
    return 0


def train(flags: Flags) -> nn.Module:
    """Train as `flags` say, in this process and its torchrun peers; return the bare model."""
    if not flags.train_data_pattern:
        raise TrainingError("--train_data_pattern is empty: give the glob of the training files")
    get_loss(flags.label_loss)  # unknown names fail before any work
    check_optimizer_name(flags.optimizer)
    require_records("--train_data_pattern", flags.train_data_pattern)
    process = init_distributed(flags.device)
    try:
        with StopRequest(process, every=METRICS_EVERY) as stop:
            return _train(flags, process, stop)
    finally:
        shutdown(process)


def sampling_seed(seed: int, rank: int, step: int) -> int:
    """The frame-sampling seed of one rank's step: a run resumed at `step` draws the same frames."""
    return (seed * 1_000_003 + rank) * 1_000_000_007 + step


def _start_or_resume(flags: Flags, process: Process) -> Checkpoint | None:
    """Clear train_dir for `--start_new_model`, else load its newest good checkpoint (if
    any; rank 0 sets damaged newer ones aside first, `yt8m.resume`)."""
    train_dir = Path(flags.train_dir)
    checkpoint = None
    if process.is_main:
        train_dir.mkdir(parents=True, exist_ok=True)
        if flags.start_new_model:
            remove_checkpoints(train_dir)
            for events in train_dir.glob("events.out.tfevents.*"):
                events.unlink()
        else:
            remove_stale_temporaries(train_dir)
            checkpoint = newest_good_checkpoint(train_dir)
    if process.distributed:
        torch.distributed.barrier()
        path = None if flags.start_new_model else latest_checkpoint(train_dir)
        if not process.is_main and path:
            checkpoint = load_checkpoint(path)
    return checkpoint


def _training_state(step: int, process: Process) -> dict:
    state = {"batches_per_rank": step, "world_size": process.world_size}
    state["torch_rng"] = torch.get_rng_state()
    if process.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(process.device)
    return state


def _restore_random_states(checkpoint: Checkpoint, process: Process) -> None:
    state = checkpoint.training_state
    torch.set_rng_state(state["torch_rng"])
    if process.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], process.device)
    if state.get("world_size", 1) != process.world_size:
        log.warning(
            "%s was written by %d processes, this run has %d: the data order changes",
            checkpoint.path,
            state.get("world_size", 1),
            process.world_size,
        )


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when no element of `tensors` is NaN or infinite (one device-to-host sync)."""
    return bool(torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all())


class TrainingLog:
    """TensorBoard scalars in train_dir and the progress bar; rank 0 only (no-ops elsewhere).

    Every step: loss, total loss (with the penalty), learning rate. Every
    `METRICS_EVERY` steps: GAP and Hit@1 of the training batch, examples per second.
    """

    def __init__(self, flags: Flags, process: Process, step: int) -> None:
        self.active = process.is_main
        self.examples_per_step = flags.batch_size * process.world_size
        self.writer = None
        if self.active:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(flags.train_dir, purge_step=step)
        self.progress = tqdm(
            total=flags.max_steps,
            initial=step,
            unit="ex",
            unit_scale=self.examples_per_step,
            desc=f"train {flags.model}",
            disable=not (self.active and flags.progress),
            dynamic_ncols=True,
        )
        self.window_start, self.window_steps = time.perf_counter(), 0

    def step(
        self,
        step: int,
        lr: float,
        label_loss: float,
        loss: float,
        predictions: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Record the step that just ended; `predictions`/`labels` are its batch's."""
        self.progress.update(1)
        self.window_steps += 1
        if not self.active:
            return
        self.writer.add_scalar("train/loss", label_loss, step)
        self.writer.add_scalar("train/total_loss", loss, step)
        self.writer.add_scalar("train/learning_rate", lr, step)
        if step % METRICS_EVERY and step != 1:
            return
        rate = (
            self.window_steps * self.examples_per_step / (time.perf_counter() - self.window_start)
        )
        p = predictions.detach().float().cpu()
        batch_gap = gap(p, labels)
        self.writer.add_scalar("train/gap", batch_gap, step)
        self.writer.add_scalar("train/hit_at_one", hit_at_one(p, labels), step)
        self.writer.add_scalar("train/examples_per_second", rate, step)
        self.progress.set_postfix(loss=f"{label_loss:.3f}", gap=f"{batch_gap:.3f}")
        self.window_start, self.window_steps = time.perf_counter(), 0

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()


def _model_and_optimizer(
    flags: Flags, process: Process
) -> tuple[Flags, nn.Module, torch.optim.Optimizer, int]:
    """A fresh model, or the latest checkpoint's; returns (flags, model, optimizer, step).

    When resuming, the model flags of the returned `flags` are the checkpoint's.
    """
    checkpoint = _start_or_resume(flags, process)
    if checkpoint is not None:
        check_resumable(flags, checkpoint)
        if process.is_main:
            warn_flag_differences(flags, checkpoint)
        model_flags = {name: saved for name, _, saved in flags.model_differences(checkpoint.flags)}
        flags = dataclasses.replace(flags, **model_flags)
    torch.manual_seed(flags.seed)
    model = build_model(flags).to(process.device)
    optimizer = build_optimizer(model.parameters(), flags.optimizer, flags.base_learning_rate)
    if checkpoint is None:
        return flags, model, optimizer, 0
    model.load_state_dict(checkpoint.model_state)
    optimizer.load_state_dict(checkpoint.optimizer_state)
    _restore_random_states(checkpoint, process)
    if process.is_main:
        log.info("resuming %s at step %d", checkpoint.path, checkpoint.step)
    return flags, model, optimizer, checkpoint.step


def _train(flags: Flags, process: Process, stop: StopRequest) -> nn.Module:
    device = process.device
    flags, model, optimizer, step = _model_and_optimizer(flags, process)
    label_loss_fn = get_loss(flags.label_loss, flags.alpha)
    trained: nn.Module = model  # what the forward pass runs: maybe wrapped, maybe compiled
    if process.distributed:
        device_ids = [device] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
    if flags.compile:
        trained = torch.compile(trained)
    sampling = torch.Generator(device=device)
    batches = iter(
        make_loader(
            flags,
            flags.train_data_pattern,
            training=True,
            rank=process.rank,
            world_size=process.world_size,
            start_batch=step,  # each step takes one batch per rank
        )
    )
    training_log = TrainingLog(flags, process, step)
    saved_step, saved_time = step, time.monotonic()

    def save() -> None:
        if not all_finite(model.parameters()):
            raise TrainingError(
                f"the weights are not finite after step {step}; training of "
                f"{flags.train_dir} stopped, its last good checkpoint is "
                f"{latest_checkpoint(flags.train_dir) or 'none'}"
            )
        path = save_checkpoint(
            flags.train_dir,
            step,
            model,
            flags,
            optimizer,
            _training_state(step, process),
            keep=flags.keep_checkpoints,
        )
        log.info("step %d: saved %s", step, path)

    model.train()
    while flags.max_steps is None or step < flags.max_steps:
        batch = next(batches, None)
        if not all_ranks_true(batch is not None, process):
            break  # the data of --num_epochs passes ran out on some rank: every rank stops

        # frames stay uint8 until they are on the device
        inputs = batch["inputs"].to(device, non_blocking=True)
        num_frames = batch["num_frames"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        lr = learning_rate(
            step,
            flags.base_learning_rate,
            flags.learning_rate_decay,
            flags.batch_size,
            flags.learning_rate_decay_examples,
        )
        set_learning_rate(optimizer, lr)
        sampling.manual_seed(sampling_seed(flags.seed, process.rank, step))

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=flags.amp):
            predictions = trained(inputs, num_frames, sampling)
        label_loss = label_loss_fn(predictions.float(), labels)
        loss = label_loss + flags.regularization_penalty * model.regularization_loss()

        losses = mean_over_ranks(torch.stack([label_loss.detach(), loss.detach()]), process)
        label_loss_value, loss_value = losses.tolist()
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"the loss of step {step + 1} is {loss_value} (label loss {label_loss_value}); "
                f"training of {flags.train_dir} stopped, its last good checkpoint is "
                f"{latest_checkpoint(flags.train_dir) or 'none'}"
            )

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_per_tensor_(model.parameters(), flags.clip_gradient_norm)
        optimizer.step()
        step += 1
        training_log.step(step, lr, label_loss_value, loss_value, predictions, batch["labels"])

        now = time.monotonic()
        periodic = step % flags.export_model_steps == 0
        if process.is_main and (periodic or now - saved_time >= flags.save_checkpoint_secs):
            save()
            saved_step, saved_time = step, now
        if stop.agreed(step):
            break

    training_log.close()
    if step == 0 and flags.max_steps != 0:  # not one batch on some rank: nothing to save
        raise no_records_error("--train_data_pattern", flags.train_data_pattern, "no batch")
    if flags.recalibrate_batch_norm > 0 and process.is_main and not stop.requested:
        loader = make_loader(flags, flags.train_data_pattern, training=True)
        recalibrate_batch_norm(
            model, itertools.islice(loader, flags.recalibrate_batch_norm), sampling
        )
        model.train()
        saved_step = -1  # the statistics changed: the final checkpoint must hold them
    broadcast_buffers(model, process)  # every rank returns the model that rank 0 saves
    if process.is_main:
        if step != saved_step or latest_checkpoint(flags.train_dir) is None:
            save()
        if not stop.requested:
            log.info("finished at step %d: %s", step, flags.train_dir)
    if stop.requested:
        raise stop.stopped(step, str(checkpoint_path(flags.train_dir, step)))
    return model
