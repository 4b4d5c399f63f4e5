"""SIGINT (Ctrl-C) and SIGTERM (what a scheduler or a preemptible VM sends) during training.

A signal does not kill `yt8m train`: the step in progress finishes, rank 0 writes the
checkpoint of that last finished step, and the command exits non-zero (130 for SIGINT,
143 for SIGTERM: `TrainingStopped`); the same command resumes from that checkpoint.

Under torchrun every rank stops at the same step: the ranks agree at the periodic look
at the losses the loop already makes (every ``METRICS_EVERY`` steps, `yt8m.loss_window`):
each rank's `vote` rides in the all-reduce of the losses and `agree` reads the sums, so a
signal that reaches one rank, or all of them at different moments, stops all of them
together, without a collective of its own. torchrun gives its workers
``--shutdown-timeout`` seconds (30) after forwarding a signal, enough for the few steps
until the next check and the checkpoint.

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
    """Catches SIGINT/SIGTERM while active (a context manager); `stop_now` says when to stop.

    Handlers are installed only in the main thread (elsewhere signals keep their meaning).
    """

    def __init__(self, process: Process) -> None:
        self.process = process
        self.signum: int | None = None  # the signal received (or agreed on)
        self._agreed = False
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

    def vote(self) -> list[float]:
        """This rank's say, one number per signal of `STOP_SIGNALS` (1: received)."""
        return [float(self.signum == signum) for signum in STOP_SIGNALS]

    def agree(self, votes: list[float]) -> None:
        """Take the sums of every rank's `vote` (the same on every rank): any vote stops
        all ranks, with SIGTERM's exit status if any rank received it."""
        received = [signum for signum, count in zip(STOP_SIGNALS, votes, strict=True) if count]
        if received:
            self._agreed, self.signum = True, received[-1]

    @property
    def stop_now(self) -> bool:
        """Whether every rank stops after the step just finished (ask after each step).

        One process: as soon as a signal came. Several: once `agree` found a vote, which
        happens at the same step on every rank.
        """
        return self._agreed if self.process.distributed else self.signum is not None

    def stopped(self, step: int, checkpoint: str) -> TrainingStopped:
        """The error a stopped run ends with: what stopped it, where, how to go on."""
        signum = self.signum or signal.SIGTERM
        return TrainingStopped(
            f"stopped by {signal.Signals(signum).name} after step {step}; {checkpoint} holds "
            "it: run the same command again to resume from there",
            signum,
        )
