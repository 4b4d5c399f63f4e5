"""Batches for a CUDA device: the loader's own batch blocks are page-locked (once each),
instead of a pinned copy of every batch; the loader counts its batches in advance.

CUDA's registration is replaced here by a recorder (the CUDA calls themselves run only
on a GPU); what is checked is which memory is registered, how often, and that reuse and
release of the blocks still work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_loader import check_frame_batch, flags, records_by_id
from yt8m.data import batch_memory
from yt8m.data import loader as loader_module
from yt8m.data.loader import make_loader
from yt8m.data.synthetic import write_dataset


@pytest.fixture(autouse=True)
def two_cpus_at_least(monkeypatch):
    monkeypatch.setattr(loader_module.os, "cpu_count", lambda: 8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("data"),
        videos={"train": 23},
        shards=5,
        classes=10,
        frames=(0, 9),
        feature_sizes=(8, 3),
        seed=1,
    )


class Recorder:
    """Stands in for cudaHostRegister / cudaHostUnregister / torch.cuda.synchronize."""

    def __init__(self, monkeypatch):
        self.registered: dict[int, int] = {}
        self.registrations = self.unregistrations = self.waits = 0
        monkeypatch.setattr(batch_memory, "cuda_register", self.register)
        monkeypatch.setattr(batch_memory, "cuda_unregister", self.unregister)
        monkeypatch.setattr(torch.cuda, "synchronize", self.wait)

    def register(self, pointer, nbytes):
        assert pointer not in self.registered, "registered twice"
        self.registered[pointer] = nbytes
        self.registrations += 1

    def unregister(self, pointer):
        assert self.waits, "unregistered before waiting for the device"
        del self.registered[pointer]
        self.unregistrations += 1

    def wait(self, device=None):
        self.waits += 1


def test_workers_blocks_are_registered_once_and_still_reused(dataset, monkeypatch):
    recorder = Recorder(monkeypatch)
    pattern = dataset["frame"]["train"]
    records = records_by_id(pattern)
    loader = make_loader(
        flags("--num_readers=2", "--num_epochs=4"), pattern, training=True, pin_memory=True
    )
    assert loader.dataloader.pin_memory is False  # no second, pinned copy per batch
    blocks, kept_views, kept_copies = [], [], []
    for step, batch in enumerate(loader):
        check_frame_batch(batch, records)
        storage = batch["inputs"].untyped_storage()
        assert recorder.registered.get(storage.data_ptr()) == storage.nbytes()  # pinned
        blocks.append(storage.data_ptr())
        if step in (0, 9):  # views the consumer keeps keep their block out of reuse
            kept_views.append(batch["inputs"][:, :3])
            kept_copies.append(batch["inputs"][:, :3].clone())
    assert len(blocks) == loader.batch_count() > 20
    assert recorder.registrations == len(set(blocks)) <= 2 * batch_memory.POOL_SIZE
    assert len(set(blocks)) < len(blocks) / 2  # the blocks were reused
    for view, copy in zip(kept_views, kept_copies, strict=True):
        assert torch.equal(view, copy)
    assert recorder.registered == {} and recorder.unregistrations == recorder.registrations


def test_in_process_blocks_are_allocated_pinned(dataset, monkeypatch):
    allocated = []

    def pinned(nbytes):
        allocated.append(nbytes)
        return np.zeros(nbytes, np.uint8)

    monkeypatch.setattr(batch_memory, "pinned_block", pinned)
    pattern = dataset["frame"]["train"]
    loader = make_loader(flags("--num_readers=0", "--num_epochs=3"), pattern, training=True)
    assert sum(1 for _ in loader) == 23 and allocated == []  # not asked: not pinned
    loader = make_loader(
        flags("--num_readers=0", "--num_epochs=3"), pattern, training=True, pin_memory=True
    )
    assert sum(1 for _ in loader) == 23
    assert 0 < len(allocated) <= batch_memory.POOL_SIZE  # every block pinned, then reused


@pytest.mark.parametrize("readers", [0, 2])
@pytest.mark.parametrize("start", [0, 5, 40])
def test_the_loader_counts_its_batches_in_advance(dataset, readers, start):
    """The trainer's stop under torchrun: each rank's batch count, known before training."""
    pattern = dataset["frame"]["train"]
    for rank in range(2):
        loader = make_loader(
            flags(f"--num_readers={readers}", "--num_epochs=3"),
            pattern,
            training=True,
            rank=rank,
            world_size=2,
            start_batch=start,
        )
        assert loader.batch_count() == sum(1 for _ in loader)


def test_with_skip_corrupt_records_a_file_damaged_in_its_lengths_counts_what_is_read(
    dataset, tmp_path
):
    """Counting reads the length fields only; where one is damaged the reader skips the
    rest of the file (--skip_corrupt_records), and the count says as much."""
    data = bytearray(
        Path(sorted(Path(dataset["frame"]["train"]).parent.glob("train*"))[0]).read_bytes()
    )
    length = int.from_bytes(data[:8], "little")
    data[16 + length + 3] ^= 0xFF  # the length field of the second record
    (tmp_path / "damaged.tfrecord").write_bytes(data)
    pattern = str(tmp_path / "damaged.tfrecord")
    loader = make_loader(
        flags("--num_readers=0", "--skip_corrupt_records", "--batch_size=1", "--num_epochs=1"),
        pattern,
        training=True,
    )
    assert loader.batch_count() == sum(1 for _ in loader) == 1
