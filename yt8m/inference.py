"""`yt8m infer` (and the root `inference.py`): a Kaggle submission from a checkpoint.

fidelity.md §6. The model is rebuilt from the checkpoint's own flag table: model
flags on the command line that disagree only produce a warning naming each one (the
seed's inference commands carry such flags, and training-only ones, which the shared
flag table accepts and nothing here reads). The data format (``--frame_features``,
``--feature_names``, ``--feature_sizes``, ``--num_classes``) is the checkpoint's too
(`yt8m.saved_flags`); a given one that differs is named in a warning. Files without a
record are an error before the model is loaded, and nothing is written.

Output: ``VideoId,LabelConfidencePairs``, then one line per video with its ``top_k``
``label confidence`` pairs, highest first; gzip when the name ends in ``.gz``. The file
appears at ``--output_file`` only once it is complete (`yt8m.atomic`).

Under ``torchrun`` every rank predicts its share of the records (the loader gives each
record to exactly one rank) into a part file of a hidden directory beside the output;
rank 0 then concatenates the parts in rank order into the one output file and removes
them. The directory of the output file must therefore be visible to every rank.

With ``--segment_labels`` the output is the 2019 segment submission
(`yt8m.segments.infer`). `predict` and `restore_for_prediction` are shared with `yt8m eval`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from yt8m.atomic import atomic_output
from yt8m.batchnorm import batch_norm_statistics
from yt8m.checkpoint import Checkpoint, restore_model
from yt8m.data.device_feed import DeviceFeed
from yt8m.data.loader import make_loader
from yt8m.data.no_records import no_records_error, require_records
from yt8m.distributed import Process, init_distributed, shutdown
from yt8m.errors import YT8MError
from yt8m.flags import Flags, parse_flags
from yt8m.linrongc import write_model_tgz
from yt8m.models.sampling import KeyStream, sampling_base
from yt8m.saved_flags import with_checkpoint_data_flags
from yt8m.submission import SUBMISSION_HEADER, format_submission_lines

log = logging.getLogger("yt8m.infer")


class PredictionError(YT8MError):
    """Flags that cannot produce predictions: a missing path, inputs the model cannot read."""


def main(argv: list[str]) -> int:
    """`yt8m infer [--flag=value ...]`."""
    flags = parse_flags(argv, "infer")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    infer(flags)
    return 0


def infer(flags: Flags) -> Path:
    """Write the submission of `flags.train_dir`'s checkpoint for `flags.input_data_pattern`.

    Returns the output path. Every rank of a torchrun job calls it; rank 0 writes the file.
    """
    if not flags.output_file:
        raise PredictionError("--output_file is empty: give the CSV to write (.gz compresses)")
    if not flags.input_data_pattern:
        raise PredictionError("--input_data_pattern is empty: give the glob of the TFRecords")
    require_records("--input_data_pattern", flags.input_data_pattern)  # before the model
    process = init_distributed(flags.device)
    try:
        quiet_other_ranks(process)
        model, checkpoint, data_flags = restore_for_prediction(flags, flags.check_point, process)
        log.info("predicting with %s (step %d)", checkpoint.path, checkpoint.step)
        if flags.output_model_tgz and process.is_main:  # linrongc's inference.py flag
            write_model_tgz(flags.output_model_tgz, checkpoint.path)
        if flags.segment_labels:  # the 2019 segment submission
            from yt8m.segments.infer import infer_segments  # it uses `predict` of this module

            return infer_segments(flags, model, data_flags, process)
        loader = make_loader(
            data_flags,
            flags.input_data_pattern,
            training=False,
            rank=process.rank,
            world_size=process.world_size,
            pin_memory=process.device.type == "cuda",
        )
        lines = _submission_lines(predict(model, loader, flags, process, "infer"), flags.top_k)
        output = Path(flags.output_file)
        if process.is_main and output.exists():
            log.info("replacing the existing %s", output)
        if process.distributed:
            _write_merged(output, lines, process, flags.input_data_pattern)
        else:
            with atomic_output(output) as out:
                out.write(SUBMISSION_HEADER + "\n")
                written = sum(out.write(line) for line in lines)
                if not written:  # every record skipped as corrupt
                    raise no_records_error("--input_data_pattern", flags.input_data_pattern)
        log.info("wrote %s", output)
        return output
    finally:
        shutdown(process)


def quiet_other_ranks(process: Process) -> None:
    """Only rank 0 logs below ERROR, so a torchrun job says each thing once."""
    if not process.is_main:
        logging.getLogger("yt8m").setLevel(logging.ERROR)


def restore_for_prediction(
    flags: Flags, check_point: int, process: Process
) -> tuple[nn.Module, Checkpoint, Flags]:
    """The checkpoint's model ready to predict, and the flags to read data for it.

    Returns (model in eval mode on the process's device, with the command line's
    ``--deterministic_sampling`` and, if asked, compiled; the loaded checkpoint; the
    command line's flags with the checkpoint's data format, `yt8m.saved_flags`; an
    exported ``.safetensors`` model carries the same flag table).
    """
    model, checkpoint = restore_model(flags.train_dir, check_point, flags, process.device)
    data_flags = with_checkpoint_data_flags(flags, checkpoint)
    model.deterministic_sampling = flags.deterministic_sampling
    if flags.compile:
        model = torch.compile(model)
    return model, checkpoint, data_flags


def predict(
    model: nn.Module, loader: Iterable[dict], flags: Flags, process: Process, name: str
) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield ``(batch, probabilities)`` for every batch of `loader`, in its order.

    batch: the loader's (host) batch; probabilities: float32 ``[B, num_classes]`` on the
    host. The device runs one batch ahead: batch k's probabilities are copied to the host
    without blocking and handed out only after batch k+1's forward pass has been issued, so
    that the device computes while the caller ranks batch k's top k on the CPU. Batch i
    samples its frames with the key of (``--seed``, rank, i), so a run is repeatable; batch
    norms use ``--batch_norm_statistics`` (`yt8m.batchnorm`). A progress bar on rank 0
    shows its videos/s.
    """
    device = process.device
    keys = KeyStream(sampling_base(flags.seed, process.rank, "predict"), 0, device)
    rank_note = f" (rank 0 of {process.world_size})" if process.distributed else ""
    progress = tqdm(
        unit=" videos",
        desc=f"{name}{rank_note}",
        disable=not (process.is_main and flags.progress),
        dynamic_ncols=True,
    )
    pending: tuple[dict, HostCopy] | None = None
    with progress:
        for host, on_device in DeviceFeed(loader, device):
            key = keys.next()
            # Not across the `yield`: an abandoned generator must not leave the mode on.
            with torch.inference_mode(), batch_norm_statistics(model, flags.batch_norm_statistics):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=flags.amp):
                    probabilities = model(on_device["inputs"], on_device["num_frames"], key)
                copy = HostCopy(probabilities.float())
            if pending is not None:
                yield pending[0], pending[1].result()
                progress.update(len(pending[0]["video_ids"]))
            pending = host, copy
        if pending is not None:
            yield pending[0], pending[1].result()
            progress.update(len(pending[0]["video_ids"]))


class HostCopy:
    """A device tensor's copy to the host, issued without blocking (page-locked memory and
    an event on CUDA); `result` waits for it. On the CPU, the tensor itself."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.event = None
        if tensor.device.type != "cuda":
            self.host = tensor
            return
        self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        self.host.copy_(tensor, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def result(self) -> torch.Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.host


def _submission_lines(
    predictions: Iterator[tuple[dict, torch.Tensor]], top_k: int
) -> Iterator[str]:
    """The submission lines of each batch, one string per batch."""
    for batch, probabilities in predictions:
        yield format_submission_lines(batch["video_ids"], probabilities, top_k)


def _write_merged(output: Path, lines: Iterator[str], process: Process, pattern: str) -> None:
    """Each rank writes its lines to a part file; rank 0 joins them in rank order (an
    error, and no output, when no rank had a line)."""
    parts_dir = [None]
    if process.is_main:
        output.parent.mkdir(parents=True, exist_ok=True)
        parts_dir[0] = tempfile.mkdtemp(prefix=f".{output.name}.parts-", dir=output.parent)
    dist.broadcast_object_list(parts_dir, src=0)
    parts = Path(parts_dir[0])
    try:
        with open(parts / f"part-{process.rank:05d}", "w", encoding="utf-8", newline="\n") as out:
            out.writelines(lines)
        dist.barrier()
        if process.is_main:
            part_files = [parts / f"part-{rank:05d}" for rank in range(process.world_size)]
            if not any(part.stat().st_size for part in part_files):
                raise no_records_error("--input_data_pattern", pattern)
            with atomic_output(output) as out:
                out.write(SUBMISSION_HEADER + "\n")
                for rank in range(process.world_size):
                    with open(parts / f"part-{rank:05d}", encoding="utf-8", newline="\n") as part:
                        shutil.copyfileobj(part, out)
    finally:
        if process.is_main:
            shutil.rmtree(parts, ignore_errors=True)
