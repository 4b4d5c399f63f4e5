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
    """`--device` as a torch device: ``auto`` is this rank's GPU when there is one, else CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device={name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device={name}: no CUDA GPU is available on this machine")
    return device


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


def all_ranks_true(value: bool, process: Process) -> bool:
    """True when `value` is True on every rank (a collective: every rank must call it)."""
    if not process.distributed:
        return value
    flag = torch.tensor([1 if value else 0], device=process.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def mean_over_ranks(value: torch.Tensor, process: Process) -> torch.Tensor:
    """The mean of a tensor over all ranks (a NaN on one rank makes it NaN everywhere)."""
    if not process.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / process.world_size


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
