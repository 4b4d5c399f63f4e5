"""`yt8m train` (and the root `train.py`): the original's training, read top to bottom.

One step (fidelity.md §5): uint8 frames go to the device and into the model, which
samples its frames with the key of (seed, rank, step) (`yt8m.models.sampling`) and
transforms the sampled rows (dequantized, L2-normalised: `yt8m.data.features`); the loss is
the label loss plus ``regularization_penalty * model.regularization_loss()`` (L2 on the MoE
weights; the label losses of a model's auxiliary predictions and ``--distill_from``'s soft
targets join it in `yt8m.objective`). With ``--ema_decay`` an average of the weights
(`yt8m.ema`) follows every step and goes into the checkpoints. Adam then applies each gradient tensor clipped on its own, with the staircase
learning rate of the examples seen so far by all ranks together:
``step * batch_size * world_size``, as the starter's multi-GPU trainer counted its towers'.

The host never waits for the device between steps: batches are copied from page-locked
memory without blocking, the next one during the current step (`yt8m.data.device_feed`);
the frame-sampling key is counted on the device; the losses stay there. Every
`METRICS_EVERY` steps (and at step 1, before each checkpoint and at the end) the trainer
reads the losses of the steps since its last look (`yt8m.loss_window`): a non-finite loss
stops training with an error naming that step and the last good checkpoint, at most
`METRICS_EVERY` steps after it; no checkpoint is written after it (nor of non-finite
weights). TensorBoard gets the losses, learning rate, GAP and Hit@1 of the batch and
examples per second at those steps.

Training stops at ``--max_steps`` or when the data of ``--num_epochs`` passes runs
out. Under ``torchrun`` every rank knows in advance how many batches every rank gets (the
loader counts them from the record headers; one all-reduce at the start agrees on the
smallest), so all ranks stop at the same step without a collective per step.
Checkpoints (`yt8m.checkpoint`) are written every ``--export_model_steps`` steps, every
``--save_checkpoint_secs`` seconds and at the end. ``--start_new_model`` deletes
train_dir's checkpoints and TensorBoard events (nothing else) and starts over; without it
the latest checkpoint is resumed, and the run then continues exactly as if it had never
stopped: the loader skips the batches already used (``start_batch``), frame sampling
depends only on the step, and the optimizer and random states come back from the
checkpoint. Model flags come from the checkpoint being resumed (a differing command line
value gives a warning); training flags come from the command line.

Fine-tuning on the 2019 rated segments (``--segment_labels``): the batches are rated
segments (`yt8m.segments.batches`) and the loss takes their label weights, so only rated
classes count; ``--start_from`` starts a new train_dir from another run's checkpoint
(`yt8m.segments.start_from`).

Under ``torchrun`` every rank trains a DistributedDataParallel replica on its own
shards (its batch-norm statistics are its own: buffers are not broadcast every step; rank
0's are what its checkpoints hold, and every rank gets them at the end); rank 0 alone
writes checkpoints and TensorBoard logs. ``--amp`` runs the forward pass under bfloat16
autocast; ``--compile`` compiles the model (DDP included) with torch.compile.

Nothing is lost or silently wrong (`yt8m.stopping`, `yt8m.resume`,
`yt8m.data.no_records`): SIGINT/SIGTERM end the run after a checkpoint of the last
finished step (exit 130/143; the same command resumes; under torchrun the ranks agree on
the stop in the periodic look at the losses, no collective of its own), a damaged latest
checkpoint is set aside for the newest good one, a resume with another ``--batch_size`` is
refused, and training data without a record is an error before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable
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
from yt8m.data.device_feed import DeviceFeed
from yt8m.data.loader import make_loader
from yt8m.data.no_records import no_records_error, require_records
from yt8m.distributed import (
    Process,
    broadcast_buffers,
    init_distributed,
    min_over_ranks,
    shutdown,
)
from yt8m.ema import WeightAverage, for_training, prediction_state
from yt8m.errors import YT8MError
from yt8m.flags import Flags, parse_flags
from yt8m.linrongc import note_num_gpu
from yt8m.loss_window import LossWindow, StepLoss
from yt8m.losses import get_loss
from yt8m.metrics import gap, hit_at_one
from yt8m.models.registry import build_model
from yt8m.models.sampling import KeyStream, sampling_base
from yt8m.objective import Objective
from yt8m.optim import (
    build_optimizer,
    check_optimizer_name,
    clip_per_tensor_,
    learning_rate,
    set_learning_rate,
)
from yt8m.resume import check_resumable, newest_good_checkpoint
from yt8m.segments.batches import rated_segment_loader
from yt8m.segments.start_from import pretrained_start
from yt8m.stopping import StopRequest

log = logging.getLogger("yt8m.train")

METRICS_EVERY = 10  # steps between looks at the losses, GAP / Hit@1 (device-to-host copies)


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
        with StopRequest(process) as stop:
            return _train(flags, process, stop)
    finally:
        shutdown(process)


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

    At step 1 and every `METRICS_EVERY` steps: loss, total loss (with the penalty),
    learning rate, GAP and Hit@1 of the training batch, examples per second since the last
    such step (measured after the losses were read, so it is the device's pace).
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

    def tick(self) -> None:
        """A step ended (host only)."""
        self.progress.update(1)
        self.window_steps += 1

    def log(
        self, lr: float, losses: StepLoss, predictions: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Scalars of the step `losses` belongs to; `predictions`/`labels` are its batch's."""
        if not self.active:
            return
        step = losses.step
        elapsed = time.perf_counter() - self.window_start
        rate = self.window_steps * self.examples_per_step / max(elapsed, 1e-9)
        p, y = predictions.detach().float().cpu(), labels.cpu()
        batch_gap = gap(p, y)
        self.writer.add_scalar("train/loss", losses.label_loss, step)
        self.writer.add_scalar("train/total_loss", losses.loss, step)
        self.writer.add_scalar("train/learning_rate", lr, step)
        self.writer.add_scalar("train/gap", batch_gap, step)
        self.writer.add_scalar("train/hit_at_one", hit_at_one(p, y), step)
        self.writer.add_scalar("train/examples_per_second", rate, step)
        self.progress.set_postfix(loss=f"{losses.label_loss:.3f}", gap=f"{batch_gap:.3f}")
        self.window_start, self.window_steps = time.perf_counter(), 0

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()


def _model_and_optimizer(
    flags: Flags, process: Process
) -> tuple[Flags, nn.Module, torch.optim.Optimizer, int, WeightAverage | None]:
    """A fresh model, or the latest checkpoint's; returns (flags, model, optimizer, step,
    EMA of the weights or None).

    When resuming, the model flags of the returned `flags` are the checkpoint's.
    """
    checkpoint = _start_or_resume(flags, process)
    start = None
    if flags.start_from:  # fine-tuning (yt8m.segments.start_from)
        flags, start = pretrained_start(flags, checkpoint, warn=process.is_main)
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
        if start is not None:
            model.load_state_dict(prediction_state(start, flags.use_ema))
        return flags, model, optimizer, 0, for_training(model, flags.ema_decay, None)
    model.load_state_dict(checkpoint.model_state)
    optimizer.load_state_dict(checkpoint.optimizer_state)
    _restore_random_states(checkpoint, process)
    if process.is_main:
        log.info("resuming %s at step %d", checkpoint.path, checkpoint.step)
    ema = for_training(model, flags.ema_decay, checkpoint.ema_state)
    return flags, model, optimizer, checkpoint.step, ema


def step_learning_rate(flags: Flags, step: int, world_size: int) -> float:
    """The learning rate of the update made at `step` (0-based): the staircase of the
    examples all ranks have seen, ``step * batch_size * world_size`` (fidelity.md §5; the
    starter's multi-GPU trainer counted ``global_step * batch_size * num_towers``)."""
    return learning_rate(
        step,
        flags.base_learning_rate,
        flags.learning_rate_decay,
        flags.batch_size * world_size,
        flags.learning_rate_decay_examples,
    )


def training_step(
    trained: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    flags: Flags,
    batch: dict,
    key: torch.Tensor,
    lr: float,
    ema: WeightAverage | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One update, nothing read back: forward (`trained`: the model, maybe wrapped in DDP,
    maybe compiled; bfloat16 autocast with ``--amp``) of a device `batch` with the
    sampling `key`, loss and penalty of the bare `model` (`objective`), backward,
    per-tensor clipping, the optimizer's step at rate `lr`, the EMA's update (``--ema_decay``)
    if any. Returns the device tensors
    (predictions ``[B, num_classes]``, label loss, loss); `bench/gpu.py` times this same
    step."""
    set_learning_rate(optimizer, lr)
    device_type = batch["inputs"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=flags.amp):
        predictions = trained(batch["inputs"], batch["num_frames"], key)
    inputs, num_frames = batch["inputs"], batch["num_frames"]
    label_loss, loss = objective(
        model, predictions, batch["labels"], batch, inputs, num_frames, key
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_per_tensor_(model.parameters(), flags.clip_gradient_norm)
    optimizer.step()
    if ema is not None:
        ema.update()
    return predictions, label_loss, loss


def _last_step(flags: Flags, batches, step: int, process: Process) -> int | None:
    """The step training ends at when it is known now: ``--max_steps`` and, under torchrun,
    the step at which the first rank's data runs out (every rank counts its batches, one
    all-reduce takes the smallest). None: a single process stops when its data ends."""
    last = flags.max_steps
    if process.distributed:
        data_end = step + min_over_ranks(batches.batch_count(), process)
        last = data_end if last is None else min(last, data_end)
    return last


def training_loader(flags: Flags) -> Callable[..., Iterable[dict]]:
    """`make_loader`, or with ``--segment_labels`` the rated segments' loader of the same
    signature (`yt8m.segments.batches`)."""
    return rated_segment_loader if flags.segment_labels else make_loader


class _Batches:
    """A rank's training batches on its device, `start_batch` on (see `_train`)."""

    def __init__(self, flags: Flags, process: Process, start_batch: int) -> None:
        self.flags, self.process = flags, process
        self.loader = self._loader(start_batch)
        self.feed = iter(DeviceFeed(self.loader, process.device))
        self.restarts = 0

    def _loader(self, start_batch: int):
        return training_loader(self.flags)(
            self.flags,
            self.flags.train_data_pattern,
            training=True,
            rank=self.process.rank,
            world_size=self.process.world_size,
            start_batch=start_batch,  # each step takes one batch per rank
            pin_memory=self.process.device.type == "cuda",
        )

    def next(self, step: int, last_step: int | None) -> tuple[dict, dict] | None:
        """The (host, device) batch of `step`, or None when training must stop."""
        batch = next(self.feed, None)
        if batch is not None or not self.process.distributed or step >= last_step:
            return batch
        # Records dropped by --skip_corrupt_records made this rank's share shorter than
        # counted: it reads its share again, so that every rank still stops at last_step.
        self.restarts += 1
        log.warning(
            "rank %d: data ended at step %d, before step %d (damaged records skipped); "
            "reading this rank's share again from its start (restart %d)",
            self.process.rank,
            step,
            last_step,
            self.restarts,
        )
        self.feed = iter(DeviceFeed(self._loader(0), self.process.device))
        return next(self.feed, None)


def _train(flags: Flags, process: Process, stop: StopRequest) -> nn.Module:
    device = process.device
    flags, model, optimizer, step, ema = _model_and_optimizer(flags, process)
    objective = Objective(flags, device)
    note_num_gpu(flags, process)
    trained: nn.Module = model  # what the forward pass runs: maybe wrapped, maybe compiled
    if process.distributed:
        device_ids = [device] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    if flags.compile:
        trained = torch.compile(trained)
    batches = _Batches(flags, process, step)
    last_step = _last_step(flags, batches.loader, step, process)
    keys = KeyStream(sampling_base(flags.seed, process.rank), step, device)
    window = LossWindow()
    training_log = TrainingLog(flags, process, step)
    saved_step, saved_time = step, time.monotonic()

    def stop_if_not_finite(losses: list[StepLoss]) -> None:
        bad = next((s for s in losses if not s.finite), None)
        if bad is not None:
            raise TrainingError(
                f"the loss of step {bad.step} is {bad.loss} (label loss {bad.label_loss}); "
                f"training of {flags.train_dir} stopped, its last good checkpoint is "
                f"{latest_checkpoint(flags.train_dir) or 'none'}"
            )

    def save() -> None:
        stop_if_not_finite(window.peek())  # no checkpoint after a non-finite loss
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
            ema_state=ema.state_dict() if ema else None,
        )
        log.info("step %d: saved %s", step, path)

    model.train()
    lr, predictions, host = None, None, None  # of the latest step
    while last_step is None or step < last_step:
        batch = batches.next(step, last_step)
        if batch is None:
            break  # a single process's data of --num_epochs passes ran out
        host, on_device = batch
        lr = step_learning_rate(flags, step, process.world_size)
        predictions, label_loss, loss = training_step(
            trained, model, optimizer, objective, flags, on_device, keys.next(), lr, ema
        )
        window.record(step + 1, label_loss, loss)
        step += 1
        training_log.tick()

        if step % METRICS_EVERY == 0 or step == 1:
            losses, votes = window.read_voting(process, stop.vote())  # every rank alike
            stop.agree(votes)
            stop_if_not_finite(losses)
            training_log.log(lr, losses[-1], predictions, host["labels"])
        now = time.monotonic()
        periodic = step % flags.export_model_steps == 0
        if process.is_main and (periodic or now - saved_time >= flags.save_checkpoint_secs):
            save()
            saved_step, saved_time = step, now
        if stop.stop_now:
            break

    losses = window.read(process)
    stop_if_not_finite(losses)
    if losses:  # the last step, unless it was logged already
        training_log.log(lr, losses[-1], predictions, host["labels"])
    training_log.close()
    if step == 0 and flags.max_steps != 0:  # not one batch on some rank: nothing to save
        raise no_records_error("--train_data_pattern", flags.train_data_pattern, "no batch")
    if flags.recalibrate_batch_norm > 0 and process.is_main and not stop.stop_now:
        loader = training_loader(flags)(flags, flags.train_data_pattern, training=True)
        base = sampling_base(flags.seed, process.rank, "recalibrate")
        recalibrate_batch_norm(model, itertools.islice(loader, flags.recalibrate_batch_norm), base)
        if ema is not None:  # the averaged weights get statistics of their own
            ema.recalibrate_batch_norm(
                model, itertools.islice(loader, flags.recalibrate_batch_norm), base
            )
        model.train()
        saved_step = -1  # the statistics changed: the final checkpoint must hold them
    broadcast_buffers(model, process)  # every rank returns the model that rank 0 saves
    if process.is_main:
        if step != saved_step or latest_checkpoint(flags.train_dir) is None:
            save()
        if not stop.stop_now:
            log.info("finished at step %d: %s", step, flags.train_dir)
    if stop.stop_now:
        raise stop.stopped(step, str(checkpoint_path(flags.train_dir, step)))
    return model
