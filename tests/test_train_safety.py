"""`yt8m train` never exits 0 with a wrong result and never loses finished work (issue 11).

Case 1 (no record), case 6 (another --batch_size), case 7 (a damaged latest checkpoint),
SIGINT and SIGTERM sent to a real `yt8m train` process (one process, and two under
torchrun). Tiny NetVLAD models on a tiny synthetic dataset (the helpers of test_train.py).
fidelity.md §5: the learning rate counts examples (step * batch_size), hence case 6.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_checkpoint_checksum import flip_byte_inside
from tests.test_train import (
    assert_same_state,
    scalars,
    tiny_argv,
    tiny_flags,
    wait_for_checkpoint_after,
    write_tiny_training_set,
)
from yt8m import train as train_command
from yt8m.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from yt8m.cli import run_command
from yt8m.data.no_records import NoRecordsError
from yt8m.distributed import Process, init_distributed, shutdown
from yt8m.loss_window import LossWindow
from yt8m.resume import ResumeError
from yt8m.stopping import StopRequest
from yt8m.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train_pattern(tmp_path_factory):
    return write_tiny_training_set(tmp_path_factory.mktemp("data"), 60)


def test_training_files_without_a_record_are_an_error_and_nothing_is_written(tmp_path, capsys):
    """Case 1: an empty file and an empty GZIP stream trained an untrained model-0."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train0.tfrecord").write_bytes(b"")
    with gzip.open(data / "train1.tfrecord", "wb"):
        pass
    pattern = str(data / "train*.tfrecord")
    train_dir = tmp_path / "run"
    argv = tiny_argv(pattern, train_dir, "--max_steps=5")
    assert run_command("train", argv) == 2
    message = capsys.readouterr().err
    assert f"--train_data_pattern={pattern!r}" in message and "no record" in message
    assert "train0.tfrecord (0 bytes)" in message and "train1.tfrecord" in message
    assert len(message.strip().splitlines()) == 1
    assert not train_dir.exists()


def test_resuming_with_another_batch_size_is_refused_and_changes_nothing(train_pattern, tmp_path):
    """Case 6: a resume with --batch_size 4 over a run of 8 trained no step and exited 0."""
    train(tiny_flags(train_pattern, tmp_path, "--max_steps=3"))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    with pytest.raises(ResumeError) as err:
        train(tiny_flags(train_pattern, tmp_path, "--max_steps=6", "--batch_size=4"))
    message = str(err.value)
    assert "model.ckpt-3.pt was trained to step 3 with --batch_size=8" in message
    assert "resume with --batch_size=8" in message and "--start_new_model" in message
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before
    train(tiny_flags(train_pattern, tmp_path, "--max_steps=6"))  # the way on that it names
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 6


def test_a_damaged_latest_checkpoint_is_set_aside_and_training_resumes_from_the_newest_good_one(
    train_pattern, tmp_path, caplog
):
    """Case 7: the run continues from step 2 exactly as a run that never stopped."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_flags(train_pattern, straight, "--max_steps=6"))
    train(tiny_flags(train_pattern, resumed, "--max_steps=4", "--export_model_steps=2"))
    assert [s for s, _ in list_checkpoints(resumed)] == [2, 4]
    latest = resumed / "model.ckpt-4.pt"
    flip_byte_inside(latest, load_checkpoint(latest).model_state["classifier.expert_weights"])
    with caplog.at_level(logging.WARNING):
        train(tiny_flags(train_pattern, resumed, "--max_steps=6"))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "model.ckpt-4.pt is damaged" in w and "resuming from" in w and "model.ckpt-2.pt" in w
        for w in warned
    ), warned
    assert (resumed / "model.ckpt-4.pt.damaged").exists()  # kept, out of the way
    assert [s for s, _ in list_checkpoints(resumed)] == [2, 6]
    assert_same_state(
        load_checkpoint(latest_checkpoint(straight)).model_state,
        load_checkpoint(latest_checkpoint(resumed)).model_state,
    )


def test_when_no_checkpoint_can_be_read_training_stops_and_renames_nothing(train_pattern, tmp_path):
    train(tiny_flags(train_pattern, tmp_path, "--max_steps=2"))
    path = tmp_path / "model.ckpt-2.pt"
    path.write_bytes(path.read_bytes()[:1000])  # cut short
    with pytest.raises(ResumeError, match=r"no checkpoint .* can be read .*model.ckpt-2.pt"):
        train(tiny_flags(train_pattern, tmp_path, "--max_steps=4"))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]


def test_no_batch_at_all_is_an_error_before_any_checkpoint(train_pattern, tmp_path, monkeypatch):
    """Case 1, where records exist but none arrives (all skipped, an empty share of a rank)."""
    monkeypatch.setattr(train_command, "make_loader", lambda *args, **kwargs: iter(()))
    with pytest.raises(NoRecordsError, match="no batch was read from --train_data_pattern"):
        train(tiny_flags(train_pattern, tmp_path, "--max_steps=3"))
    assert list_checkpoints(tmp_path) == []


def _stopped_step(stderr: str, name: str) -> int:
    match = re.search(rf"stopped by {name} after step (\d+); (\S+) holds it", stderr)
    assert match, stderr[-3000:]
    return int(match.group(1))


@pytest.mark.parametrize(
    ("signum", "readers"),
    [(signal.SIGINT, 2), (signal.SIGTERM, 0)],
    ids=["SIGINT-to-the-process-group", "SIGTERM"],
)
def test_a_signal_checkpoints_the_last_finished_step_and_the_same_command_resumes(
    train_pattern, tmp_path, signum, readers, caplog
):
    """Work that must not be lost: Ctrl-C reaches the whole process group (DataLoader
    workers too), a scheduler's SIGTERM the process."""
    argv = tiny_argv(
        train_pattern,
        tmp_path,
        f"--num_readers={readers}",
        "--num_epochs=100",
        "--max_steps=30",
        "--export_model_steps=2",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "yt8m", "train", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_checkpoint_after(tmp_path, 0, process)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)  # what Ctrl-C in a terminal does
        else:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, stderr[-3000:]
    step = _stopped_step(stderr, name)
    assert 2 <= step < 30
    saved = load_checkpoint(latest_checkpoint(tmp_path))
    assert saved.step == step
    assert max(scalars(tmp_path, "train/loss")) == step  # every finished step is in it
    with caplog.at_level(logging.INFO):
        assert train_command.main(argv) == 0  # the same command goes on from there
    assert f"resuming {tmp_path / f'model.ckpt-{step}.pt'} at step {step}" in caplog.text
    assert [s for s, _ in list_checkpoints(tmp_path)][-1] == 30


def _rank_pid(agent: int, rank: int, timeout: float = 60.0) -> int:
    """The process id of torchrun worker `rank` (a child of the agent whose RANK it is)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == agent and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} under torchrun agent {agent}")


@pytest.mark.parametrize("target", ["agent", "rank 1 alone"])
def test_under_torchrun_every_rank_stops_at_the_same_step(train_pattern, tmp_path, target):
    """SIGTERM to the torchrun agent, which forwards it to both ranks, or to one rank alone
    (the other never receives it): they agree in the periodic read of the losses, rank 0
    writes that step's checkpoint, both exit 143."""
    argv = tiny_argv(
        train_pattern, tmp_path, "--num_epochs=1000", "--max_steps=100000", "--device=cpu"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "yt8m", "train", *argv, "--export_model_steps=3"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_checkpoint_after(tmp_path, 0, process)
        time.sleep(0.2)
        if target == "agent":
            process.send_signal(signal.SIGTERM)
        else:
            os.kill(_rank_pid(process.pid, 1), signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    steps = {int(s) for s in re.findall(r"stopped by SIGTERM after step (\d+)", output)}
    assert len(re.findall(r"stopped by SIGTERM after step", output)) == 2, output[-3000:]
    assert len(steps) == 1, output[-3000:]  # both ranks at the same step
    received = output.count("yt8m train: SIGTERM received")
    assert received == (2 if target == "agent" else 1), output[-3000:]
    (step,) = steps
    assert step % 10 == 0  # the periodic check (METRICS_EVERY)
    checkpoint = load_checkpoint(latest_checkpoint(tmp_path))
    assert checkpoint.step == step
    assert all(torch.isfinite(t).all() for t in checkpoint.model_state.values())


def test_a_stop_request_catches_the_signal_only_while_active():
    process = init_distributed("cpu")
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest(process) as stop:
        assert not stop.stop_now
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in this thread between bytecodes
        assert stop.requested and stop.stop_now  # one process: at once
        error = stop.stopped(2, "runs/x/model.ckpt-2.pt")
    assert signal.getsignal(signal.SIGTERM) == before
    assert error.exit_status == 143 and "stopped by SIGTERM after step 2" in str(error)
    shutdown(process)


def test_ranks_agree_on_a_stop_in_the_all_reduce_of_the_losses(monkeypatch):
    """Under torchrun the stop is agreed at the periodic look at the losses (issue 15's
    loop: no collective per step), in the one all-reduce that reads them: a rank that got
    no signal stops with the others, at the same step. Two ranks stood in for by one
    all-reduce that adds the other rank's tensor (it received SIGTERM, this one nothing)."""
    calls = []

    def all_reduce(tensor, op=None):
        calls.append(tensor.numel())
        other = torch.tensor([2.0, 4.0, 2.0, 4.0, 0.0, 1.0])  # its losses, its SIGTERM vote
        tensor += other

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    process = Process(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    window = LossWindow()
    window.record(1, torch.tensor(1.0), torch.tensor(2.0))
    window.record(2, torch.tensor(1.0), torch.tensor(2.0))
    stop = StopRequest(process)
    assert stop.vote() == [0.0, 0.0] and not stop.stop_now
    losses, votes = window.read_voting(process, stop.vote())
    assert calls == [6]  # the losses and the votes in one collective
    assert [(s.step, s.label_loss, s.loss) for s in losses] == [(1, 1.5, 3.0), (2, 1.5, 3.0)]
    stop.agree(votes)
    assert stop.stop_now and stop.requested
    assert stop.stopped(20, "c").exit_status == 143  # the signal another rank received
    assert window.read(process) == [] and calls == [6]  # an empty window: nothing to reduce


def test_under_torchrun_a_signal_waits_for_the_agreement():
    process = Process(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    stop = StopRequest(process)
    stop._handle(signal.SIGINT, None)
    assert stop.requested and not stop.stop_now  # the other rank may not know yet
    assert stop.vote() == [1.0, 0.0]
    stop.agree([1.0, 0.0])
    assert stop.stop_now and stop.stopped(10, "c").exit_status == 130
