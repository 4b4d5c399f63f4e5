"""SIGINT (Ctrl-C) and SIGTERM (what a scheduler or a preemptible VM sends) during training.

A signal does not kill `yt8m train`: the step in progress finishes, rank 0 writes the
checkpoint of that last finished step, and the command exits non-zero (130 for SIGINT,
143 for SIGTERM: `TrainingStopped`); the same command resumes from that checkpoint.

Under torchrun every rank stops at the same step: the ranks agree at the periodic check
the loop already makes (every `every` steps, one small all-reduce of the signal number),
so a signal that reaches one rank, or all of them at different moments, stops all of them
together. torchrun gives its workers ``--shutdown-timeout`` seconds (30) after forwarding a
signal, enough for the few steps until the next check and the checkpoint.

A second SIGINT in a single process (not under torchrun, whose agent forwards each signal
again) stops at once, without a checkpoint. DataLoader workers ignore both signals
(`ignore_stop_signals`, their `worker_init_fn`): a Ctrl-C reaches the whole process group,
and the main process, which shuts them down, decides.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from yt8m.distributed import Process
from yt8m.errors import YT8MError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(YT8MError):
    """Training stopped by a signal after writing its checkpoint; exits 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signum


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """SIGINT and SIGTERM ignored in this process (a DataLoader worker's `worker_init_fn`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _installable(handler: Any, signum: int) -> Any:
    """A handler `signal.signal` accepts: None (one installed outside Python) becomes the
    default action."""
    if handler is None:
        return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    return handler


class StopRequest:
    """Catches SIGINT/SIGTERM while active (a context manager); `agreed` says when to stop.

    Handlers are installed only in the main thread (elsewhere signals keep their meaning).
    """

    def __init__(self, process: Process, every: int) -> None:
        self.process = process
        self.every = max(1, every)
        self.signum: int | None = None  # the signal received (or agreed on)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, _installable(handler, signum))
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            note = "finishing this step, writing a checkpoint, then stopping"
            if signum == signal.SIGINT and not self.process.distributed:
                note += " (Ctrl-C again stops at once, without one)"
                signal.signal(signum, _installable(self._previous.get(signum), signum))
            os.write(2, f"\nyt8m train: {name} received: {note}\n".encode())

    @property
    def requested(self) -> bool:
        """Whether a stop was received here or agreed with the other ranks."""
        return self.signum is not None

    def agreed(self, step: int) -> bool:
        """Whether every rank stops after `step` (call it after each step, on every rank).

        One process: as soon as a signal came. Several: only every `every` steps, when all
        ranks exchange what they received (a collective every rank reaches at that step).
        """
        if not self.process.distributed:
            return self.signum is not None
        if step % self.every:
            return False
        device = self.process.device
        received = torch.tensor([self.signum or 0], dtype=torch.int64, device=device)
        dist.all_reduce(received, op=dist.ReduceOp.MAX)
        agreed = int(received.item())
        if agreed and self.signum is None:
            self.signum = agreed
        return agreed != 0

    def stopped(self, step: int, checkpoint: str) -> TrainingStopped:
        """The error a stopped run ends with: what stopped it, where, how to go on."""
        signum = self.signum or signal.SIGTERM
        return TrainingStopped(
            f"stopped by {signal.Signals(signum).name} after step {step}; {checkpoint} holds "
            "it: run the same command again to resume from there",
            signum,
        )
