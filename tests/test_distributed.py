"""Processes: device choice, and DistributedDataParallel training over 2 Gloo processes."""

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_train import tiny_argv as train_tiny_argv
from tests.test_train import write_tiny_training_set
from yt8m.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from yt8m.distributed import (
    DeviceError,
    Process,
    flushing_denormals,
    init_distributed,
    min_over_ranks,
    resolve_device,
    shutdown,
)
from yt8m.flags import parse_flags
from yt8m.train import train


def test_auto_is_cpu_without_a_gpu_and_a_bad_device_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="--device=cuda: no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="--device=cuda:1: no CUDA GPU"):
        resolve_device("cuda:1")
    for bad in ("tpu7", "meta"):
        with pytest.raises(DeviceError, match=f"--device='{bad}'"):
            resolve_device(bad)


def test_each_rank_drives_its_own_gpu(monkeypatch):
    """auto and cuda: GPU LOCAL_RANK; cuda:N: GPU N + LOCAL_RANK (every rank used to get
    GPU N, and NCCL failed); cpu: the CPU for every rank; past the last GPU: an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    for rank in range(4):
        assert resolve_device("auto", local_rank=rank) == torch.device("cuda", rank)
        assert resolve_device("cuda", local_rank=rank) == torch.device("cuda", rank)
        assert resolve_device("cuda:2", local_rank=rank) == torch.device("cuda", 2 + rank)
        assert resolve_device("cpu", local_rank=rank) == torch.device("cpu")
    assert resolve_device("cuda:5") == torch.device("cuda", 5)
    with pytest.raises(DeviceError, match="local rank 3 would drive GPU 8, but this machine"):
        resolve_device("cuda:5", local_rank=3)


def test_a_single_process_is_rank_zero_and_collectives_pass_through(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    process = init_distributed("cpu")
    assert process == Process(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert process.is_main and not process.distributed
    assert min_over_ranks(7, process) == 7
    shutdown(process)


def test_denormals_are_flushed_while_running_and_the_callers_setting_restored_after():
    """As TensorFlow's executors (fidelity: speed of saturating models); but train/eval/
    infer called as functions must not leave the caller's process changed."""
    for before in (False, True):
        torch.set_flush_denormal(before)
        process = init_distributed("cpu")
        assert flushing_denormals()
        shutdown(process)
        assert flushing_denormals() == before
    torch.set_flush_denormal(False)


# ---- two Gloo processes ------------------------------------------------------------------

TRAIN_VIDEOS = 45


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    """Three files for two ranks: one rank reads twice as many videos as the other."""
    return write_tiny_training_set(tmp_path_factory.mktemp("data"), TRAIN_VIDEOS)


def tiny_argv(pattern, train_dir, *extra):
    """test_train's tiny gated NetVLAD, in batches of 4, on the CPU."""
    return train_tiny_argv(pattern, train_dir, "--batch_size=4", "--device=cpu", *extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, world_size: int, port: int, argv: list[str], out: str) -> None:
    """One spawned rank: torchrun's environment, then `yt8m.train.train`."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    model = train(parse_flags(argv, "train"))
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_weights(uneven_shards, tmp_path):
    # One epoch over uneven shards: the rank with less data runs out first, and every rank
    # stops at that step (known in advance from the record counts, no collective per step)
    # instead of waiting for it forever. The staircase counts both ranks' examples.
    argv = tiny_argv(
        uneven_shards,
        tmp_path / "run",
        "--num_epochs=1",
        "--export_model_steps=2",
        "--learning_rate_decay=0.5",
        "--learning_rate_decay_examples=16",
    )
    torch.multiprocessing.spawn(
        _train_rank, args=(2, _free_port(), argv, str(tmp_path)), nprocs=2, join=True
    )
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    steps = [s for s, _ in list_checkpoints(tmp_path / "run")]
    assert 0 < saved.step < math.ceil(TRAIN_VIDEOS / 2 / 4) + 1  # the shorter share's batches
    assert all(step % 2 == 0 for step in steps[:-1])  # --export_model_steps=2, then the end
    assert saved.training_state["world_size"] == 2
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.equal(rank0[name], saved.model_state[name]), name
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    rates = {e.step: e.value for e in events.Scalars("train/learning_rate")}
    # 2 ranks x batches of 4: 8 examples per step, a decay every 2 steps (one rank: 4)
    expected = {s: 0.01 * 0.5 ** ((s - 1) * 8 // 16) for s in (1, saved.step)}
    assert rates == pytest.approx(expected)


def test_a_failing_rank_stops_every_rank_under_torchrun(uneven_shards, tmp_path):
    # Two files, one damaged: the rank that reads it fails, and torchrun stops the other,
    # which would otherwise wait in a collective.
    files = sorted(Path(uneven_shards).parent.glob("train*.tfrecord"))[:2]
    data = tmp_path / "data"
    data.mkdir()
    for f in files:
        shutil.copy(f, data / f.name)
    damaged = data / files[1].name
    payload = bytearray(damaged.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    damaged.write_bytes(bytes(payload))
    argv = tiny_argv(data / "train*.tfrecord", tmp_path / "run", "--max_steps=50")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    torchrun += ["-m", "yt8m", "train", *argv]  # --standalone: torchrun picks a free port
    result = subprocess.run(
        torchrun,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode != 0
    assert damaged.name in result.stderr
