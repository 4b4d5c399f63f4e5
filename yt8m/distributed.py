"""Processes: one, or several started by `torchrun` (DistributedDataParallel).

`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: NCCL
when the processes drive GPUs, Gloo on CPUs. Without that environment it is a
single process of rank 0. Rank 0 alone writes checkpoints, logs and files.

Collectives carry a timeout (`COLLECTIVE_TIMEOUT`), so a rank that dies leaves the
others waiting at most that long even outside torchrun (which itself stops the
surviving ranks as soon as one fails).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from yt8m.cpu_memory import keep_freed_memory
from yt8m.errors import YT8MError

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class DeviceError(YT8MError, ValueError):
    """A `--device` that does not exist on this machine."""


@dataclass(frozen=True)
class Process:
    """Where this process stands: its rank among `world_size` and the device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    flushed_denormals_before: bool = False  # the CPU setting `shutdown` gives back

    @property
    def is_main(self) -> bool:
        """True for the one process that writes checkpoints, logs and files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`--device` as the torch device of the process of `local_rank` (torchrun's
    ``LOCAL_RANK``, 0 outside torchrun): ``auto`` is that rank's GPU when there is one, else
    the CPU; ``cuda`` is GPU ``local_rank``; ``cuda:N`` is GPU ``N + local_rank`` (N is the
    first GPU of this machine's ranks: ``--device=cuda:2`` with 4 ranks uses GPUs 2 to 5;
    one process uses GPU N); ``cpu`` is the CPU for every rank."""
    given = name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device={given!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device={given!r}: expected cpu, cuda, cuda:N or auto")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"--device={given}: no CUDA GPU is available on this machine")
    index = (device.index or 0) + local_rank
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"--device={given}: the process of local rank {local_rank} would drive GPU "
            f"{index}, but this machine has {count} (GPUs 0 to {count - 1}); give a lower "
            "--device=cuda:N or fewer processes per machine"
        )
    return torch.device("cuda", index)


def init_distributed(device_name: str = "auto") -> Process:
    """Join torchrun's process group when started by torchrun; return this process's place.

    Also flushes denormal floats to zero on the CPU, as TensorFlow's executors did: a
    saturating model otherwise slows down several times in denormal arithmetic.
    `shutdown` restores the caller's setting (train, eval and infer run as functions too).
    On the CPU, freed memory is kept for reuse from then on (`yt8m.cpu_memory`).
    """
    flushed_before = flushing_denormals()
    torch.set_flush_denormal(True)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cpu":
        keep_freed_memory()
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT
        )
    return Process(rank, world_size, local_rank, device, flushed_before)


def flushing_denormals() -> bool:
    """Whether the CPU treats denormal floats as zero now (a tensor created from a
    denormal holds it; arithmetic on it gives 0 when flushing)."""
    return torch.tensor(1e-40, dtype=torch.float32).mul(1.0).item() == 0.0


def min_over_ranks(value: int, process: Process) -> int:
    """The smallest of every rank's `value` (a collective: every rank must call it)."""
    if not process.distributed:
        return value
    smallest = torch.tensor([value], dtype=torch.int64, device=process.device)
    dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
    return int(smallest.item())


def broadcast_buffers(module: torch.nn.Module, process: Process) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics are updated per rank)."""
    if process.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def shutdown(process: Process) -> None:
    """Leave the process group, if this process joined one; restore the denormal setting."""
    torch.set_flush_denormal(process.flushed_denormals_before)
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
