"""Loader batches on the device, copied without stalling the host (CUDA) or passed on (CPU).

On a CUDA device each batch's tensors are copied on a copy stream with ``non_blocking``
(from page-locked memory: ``make_loader(pin_memory=True)``), and the next batch's copy is
issued before the current batch is handed out, so that it overlaps the current step. The
compute stream waits for a copy on the device (an event), never on the host. A host batch
is let go (its loader buffer reused) only once its copy is done: the feed keeps it until
its event has completed, waiting on the oldest one only when more than `held` are pending
(then the host is that far ahead of the device, and waiting there bounds the memory).

`DeviceFeed(batches, device)` yields ``(host_batch, device_batch)``: the same dict keys;
every tensor of ``device_batch`` on `device` (on the CPU it is the host batch itself).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch


class Copies(Protocol):
    """How a feed moves a batch to the device (`CudaCopies`; a fake one in tests)."""

    def start(self, batch: dict) -> tuple[dict, object]:
        """Issue the copy of `batch`; returns the device batch and the copy's event."""

    def use(self, device_batch: dict, event: object) -> None:
        """Make the compute stream wait for the copy (on the device) before it is used."""

    def done(self, event: object) -> bool:
        """Whether the copy has completed (without waiting)."""

    def wait(self, event: object) -> None:
        """Block the host until the copy has completed."""


class CudaCopies:
    """Copies on a side stream of `device`, ordered with its current stream by events."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def start(self, batch: dict) -> tuple[dict, torch.cuda.Event]:
        with torch.cuda.stream(self.stream):
            moved = {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def use(self, device_batch: dict, event: torch.cuda.Event) -> None:
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        for value in device_batch.values():
            if isinstance(value, torch.Tensor):
                value.record_stream(compute)  # allocated on the copy stream, used here

    def done(self, event: torch.cuda.Event) -> bool:
        return event.query()

    def wait(self, event: torch.cuda.Event) -> None:
        event.synchronize()


class DeviceFeed:
    """Iterable of ``(host_batch, device_batch)`` over `batches` (see the module docstring)."""

    def __init__(
        self,
        batches: Iterable[dict],
        device: torch.device,
        *,
        held: int = 3,
        copies: Copies | None = None,
    ) -> None:
        self.batches = batches
        self.device = torch.device(device)
        self.held = held
        self.copies = copies
        if copies is None and self.device.type == "cuda":
            self.copies = CudaCopies(self.device)

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        if self.copies is None:
            for batch in self.batches:
                yield batch, batch
            return
        copies = self.copies
        pending: deque[tuple[dict, object]] = deque()  # host batches whose copy may run
        source = iter(self.batches)

        def issue() -> tuple[dict, dict, object] | None:
            host = next(source, None)
            if host is None:
                return None
            moved, event = copies.start(host)
            return host, moved, event

        upcoming = issue()
        try:
            while upcoming is not None:
                host, moved, event = upcoming
                copies.use(moved, event)
                pending.append((host, event))
                upcoming = issue()  # overlaps the step the caller runs on `moved`
                while pending and copies.done(pending[0][1]):
                    pending.popleft()
                while len(pending) > self.held:
                    copies.wait(pending.popleft()[1])
                yield host, moved
        finally:
            while pending:  # nothing is let go while a copy may still read it
                copies.wait(pending.popleft()[1])
