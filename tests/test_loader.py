"""The loader: batch layout (fidelity.md §2), exactly-once evaluation over ranks and workers,
deterministic training that resumes at any batch."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch

from yt8m.data import loader as loader_module
from yt8m.data.loader import _round_robin_resume, make_loader
from yt8m.data.records import iter_video_labels, parse_frame_record
from yt8m.data.synthetic import write_dataset
from yt8m.data.tfrecord import RecordError, TFRecordWriter, expand_pattern, read_records
from yt8m.flags import FlagError, parse_flags

SIZES = (8, 3)


@pytest.fixture(autouse=True)
def two_cpus_at_least(monkeypatch):
    """The worker count is min(--num_readers, CPUs): make 2 workers possible anywhere."""
    monkeypatch.setattr(loader_module.os, "cpu_count", lambda: 8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    videos = {"train": 23, "validate": 17, "test": 5}
    return write_dataset(
        root, videos=videos, shards=5, classes=10, frames=(0, 9), feature_sizes=SIZES, seed=1
    )


def flags(*extra: str, frame: bool = True):
    args = [
        f"--feature_sizes={SIZES[0]},{SIZES[1]}",
        "--num_classes=10",
        "--max_frames=6",
        "--batch_size=3",
    ]
    return parse_flags([*args, "--frame_features" if frame else "--noframe_features", *extra])


def ids(loader) -> list[list[str]]:
    return [batch["video_ids"] for batch in loader]


def all_ids(pattern: str) -> list[str]:
    return [vid for vid, _ in iter_video_labels(pattern, 10)]


def records_by_id(pattern: str) -> dict:
    records = {}
    for path in expand_pattern(pattern):
        for payload in read_records(path):
            record = parse_frame_record(
                payload, [("rgb", 8), ("audio", 3)], max_frames=6, num_classes=10
            )
            records[record.video_id] = record
    return records


def check_frame_batch(batch: dict, records: dict) -> None:
    """The batch holds its records' frames, zero-padded (fidelity.md §2.2), and labels."""
    assert batch.keys() == {"video_ids", "inputs", "num_frames", "labels"}
    assert batch["inputs"].dtype == torch.uint8 and batch["inputs"].shape[1:] == (6, 11)
    assert batch["labels"].dtype == torch.bool and batch["labels"].shape[1] == 10
    assert batch["num_frames"].dtype == torch.int64
    for row, vid in enumerate(batch["video_ids"]):
        record = records[vid]
        n = record.num_frames
        assert batch["num_frames"][row] == n
        np.testing.assert_array_equal(batch["inputs"][row, :n].numpy(), record.frames)
        assert not batch["inputs"][row, n:].any()
        assert torch.equal(
            batch["labels"][row].nonzero().flatten(), torch.from_numpy(record.labels)
        )


@pytest.mark.parametrize("readers", [0, 2])
def test_frame_batches_kept_together_hold_the_records_zero_padded(dataset, readers):
    """Batches the consumer keeps never share memory, however they are allocated."""
    pattern = dataset["frame"]["validate"]
    batches = list(make_loader(flags(f"--num_readers={readers}"), pattern, training=False))
    sizes = [len(b["video_ids"]) for b in batches]
    assert sum(sizes) == 17 and max(sizes) == 3
    if readers == 0:
        assert sizes == [3, 3, 3, 3, 3, 2]  # last partial batch kept
    assert len({b["inputs"].data_ptr() for b in batches}) == len(batches)
    records = records_by_id(pattern)
    for batch in batches:
        check_frame_batch(batch, records)


def memory_identity(tensor: torch.Tensor, in_worker: bool) -> int:
    """The address of an in-process batch; the shared-memory segment of a worker's."""
    if in_worker:
        fd, _ = tensor.untyped_storage()._share_fd_cpu_()
        return os.fstat(fd).st_ino
    return tensor.data_ptr()


@pytest.mark.parametrize("readers", [0, 2])
def test_reused_batch_memory_is_cleared_where_a_shorter_video_ends(dataset, readers):
    """A consumer that lets each batch go gets the same memory again (no page faults);
    rows an earlier, longer video wrote are zero again (fidelity.md §2.2). Views the
    consumer keeps keep their batch's memory out of reuse."""
    pattern = dataset["frame"]["train"]
    records = records_by_id(pattern)
    loader = make_loader(
        flags(f"--num_readers={readers}", "--num_epochs=3"), pattern, training=True
    )
    memory, kept_views, kept_copies = [], [], []
    for step, batch in enumerate(loader):
        check_frame_batch(batch, records)
        memory.append(memory_identity(batch["inputs"], in_worker=readers > 0))
        if step in (0, 7):  # keep a view of two batches, with a copy to compare later
            kept_views.append(batch["inputs"][:, :3])
            kept_copies.append(batch["inputs"][:, :3].clone())
    assert len(set(memory)) < len(memory) / 2  # memory was reused
    for view, copy in zip(kept_views, kept_copies, strict=True):
        assert torch.equal(view, copy)  # ... but never under a view still held


def test_video_batches(dataset):
    batch = next(
        iter(
            make_loader(
                flags("--num_readers=0", frame=False), dataset["video"]["train"], training=False
            )
        )
    )
    assert batch["inputs"].dtype == torch.float32 and batch["inputs"].shape == (3, 11)
    assert batch["num_frames"].tolist() == [1, 1, 1]


@pytest.mark.parametrize("split", ["train", "test"])  # 5 files >= 4 readers; records split
def test_evaluation_reads_every_record_exactly_once_over_2_ranks_x_2_workers(
    dataset, split, tmp_path
):
    pattern = dataset["frame"][split]
    if split == "test":  # fewer files (2) than ranks x workers: split by record index
        pattern = ",".join(expand_pattern(pattern)[:2])
    seen = []
    for rank in range(2):
        loader = make_loader(
            flags("--num_readers=2"), pattern, training=False, rank=rank, world_size=2
        )
        assert loader.dataloader.num_workers == 2
        first, second = ids(loader), ids(loader)
        assert first == second  # stable order
        seen += [vid for batch in first for vid in batch]
    assert Counter(seen) == Counter(all_ids(pattern))
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize("readers", [0, 2])
def test_training_is_deterministic_and_covers_every_record_each_epoch(dataset, readers):
    pattern = dataset["frame"]["train"]
    args = flags(f"--num_readers={readers}", "--num_epochs=2", "--seed=5")
    run = ids(make_loader(args, pattern, training=True))
    assert run == ids(make_loader(args, pattern, training=True))
    flat = [vid for batch in run for vid in batch]
    assert Counter(flat) == Counter(all_ids(pattern) * 2)
    other = ids(
        make_loader(
            flags(f"--num_readers={readers}", "--num_epochs=2", "--seed=6"), pattern, training=True
        )
    )
    assert other != run


@pytest.mark.parametrize("readers", [0, 2])
def test_start_batch_continues_exactly_where_a_run_stopped(dataset, readers):
    pattern = dataset["frame"]["train"]
    args = flags(f"--num_readers={readers}", "--num_epochs=2", "--seed=2", "--batch_size=4")
    full = list(make_loader(args, pattern, training=True))
    total = len(full)
    for start in sorted({1, 5, total - 3, total - 1, total, total + 2}):
        resumed = list(make_loader(args, pattern, training=True, start_batch=start))
        assert [b["video_ids"] for b in resumed] == [b["video_ids"] for b in full[start:]]
        for got, want in zip(resumed, full[start:], strict=True):
            assert torch.equal(got["inputs"], want["inputs"])
            assert torch.equal(got["labels"], want["labels"])


def test_round_robin_resume_follows_the_dataloader_order():
    # workers with 3, 1 and 2 batches: order w0 w1 w2 | w0 w2 | w0
    order = [0, 1, 2, 0, 2, 0]
    for k in range(len(order) + 2):
        expected = tuple(order[:k].count(w) for w in range(3))
        next_worker = order[k] if k < len(order) else 0
        assert _round_robin_resume([3, 1, 2], k) == (expected, next_worker)


def test_a_worker_error_reaches_the_caller_as_a_record_error(tmp_path):
    with TFRecordWriter(tmp_path / "a.tfrecord") as writer:
        writer.write(b"\x0a\x02\x0a\x00")  # a SequenceExample without an id
    (tmp_path / "b.tfrecord").write_bytes((tmp_path / "a.tfrecord").read_bytes())
    with pytest.raises(RecordError, match=r"^\S+a\.tfrecord, record 0: no video id"):
        list(make_loader(flags("--num_readers=2"), str(tmp_path / "*.tfrecord"), training=False))


def test_skip_corrupt_records_counts_and_reports(dataset, tmp_path, capsys):
    [path] = expand_pattern(dataset["frame"]["test"])[:1]
    data = bytearray(open(path, "rb").read())
    data[20] ^= 0xFF  # inside the first record's payload
    (tmp_path / "damaged.tfrecord").write_bytes(data)
    pattern = str(tmp_path / "damaged.tfrecord")
    with pytest.raises(RecordError, match="bad payload CRC"):
        list(make_loader(flags("--num_readers=0"), pattern, training=False))
    loader = make_loader(
        flags("--num_readers=0", "--skip_corrupt_records"), pattern, training=False
    )
    got = [vid for batch in ids(loader) for vid in batch]
    original = [vid for vid, _ in iter_video_labels(path, 10)]
    assert got == original[1:]
    assert "damaged.tfrecord: 1 corrupt record(s) skipped" in capsys.readouterr().err


def test_bad_epochs_and_ranks_are_flag_errors(dataset):
    with pytest.raises(FlagError, match="num_epochs"):
        make_loader(flags("--num_epochs=0"), dataset["frame"]["train"], training=True)
    with pytest.raises(FlagError, match="rank 2"):
        make_loader(flags(), dataset["frame"]["train"], training=False, rank=2, world_size=2)
