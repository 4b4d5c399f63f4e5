"""The training loop: schedule, penalty, resume, start over, epochs, NaN stop, kill safety.

Tiny models (few clusters, 12 classes, 10 frames of 24 features) on a tiny synthetic
dataset, in this process (`--num_readers=0`) unless a test needs workers or a subprocess.
"""

import logging
import math
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from yt8m.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, restore_model
from yt8m.data.synthetic import write_dataset
from yt8m.flags import parse_flags
from yt8m.losses import LossError
from yt8m.train import TrainingError, step_learning_rate, train

TRAIN_VIDEOS, CLASSES = 60, 12


def write_tiny_training_set(root, videos: int) -> str:
    """`videos` tiny frame-level training videos in 3 shards; returns their glob."""
    patterns = write_dataset(
        root,
        videos={"train": videos},
        shards=3,
        classes=CLASSES,
        frames=(3, 10),
        feature_sizes=(16, 8),
        levels=("frame",),
    )
    return patterns["frame"]["train"]


@pytest.fixture(scope="module")
def train_pattern(tmp_path_factory):
    return write_tiny_training_set(tmp_path_factory.mktemp("data"), TRAIN_VIDEOS)


def tiny_argv(pattern, train_dir, *extra):
    """A tiny gated NetVLAD with a gated MoE, the seed's first model in miniature."""
    return [
        f"--train_data_pattern={pattern}",
        f"--train_dir={train_dir}",
        "--model=NetVLADModelLF",
        "--frame_features=True",
        "--feature_names=rgb,audio",
        "--feature_sizes=16,8",
        f"--num_classes={CLASSES}",
        "--max_frames=10",
        "--iterations=6",
        "--netvlad_cluster_size=4",
        "--netvlad_hidden_size=8",
        "--netvlad_relu=False",
        "--gating=True",
        "--moe_prob_gating=True",
        "--moe_l2=1e-6",
        "--batch_size=8",
        "--base_learning_rate=0.01",
        "--num_readers=0",
        "--progress=False",
        *extra,
    ]


def tiny_flags(pattern, train_dir, *extra):
    return parse_flags(tiny_argv(pattern, train_dir, *extra), "train")


def weights(train_dir):
    return load_checkpoint(latest_checkpoint(train_dir)).model_state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def scalars(train_dir, tag):
    events = EventAccumulator(str(train_dir))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def test_learning_rate_decays_by_examples_of_the_configured_batch_size(train_pattern, tmp_path):
    # fidelity.md §5: base * decay ** floor(step * batch_size / decay_examples)
    flags = tiny_flags(
        train_pattern,
        tmp_path,
        "--max_steps=25",
        "--num_epochs=10",
        "--learning_rate_decay=0.5",
        "--learning_rate_decay_examples=16",
    )
    train(flags)
    logged = scalars(tmp_path, "train/learning_rate")
    # logged at step 1, every METRICS_EVERY = 10 steps and at the end; the update that
    # ends at step s was made at step s - 1 (0-based)
    expected = {s: 0.01 * 0.5 ** math.floor((s - 1) * 8 / 16) for s in (1, 10, 20, 25)}
    assert logged == pytest.approx(expected)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    for tag in ("loss", "total_loss", "gap", "hit_at_one", "examples_per_second"):
        assert set(scalars(tmp_path, f"train/{tag}")) == {1, 10, 20, 25}, tag


def test_the_staircase_counts_the_examples_of_every_rank():
    """The starter's multi-GPU trainer decayed by global_step * batch_size * num_towers:
    under torchrun the rate decays as fast per example as one process would."""
    flags = parse_flags(
        ["--batch_size=8", "--learning_rate_decay=0.5", "--learning_rate_decay_examples=64"]
    )
    assert step_learning_rate(flags, 7, world_size=1) == flags.base_learning_rate
    assert step_learning_rate(flags, 8, world_size=1) == 0.5 * flags.base_learning_rate
    assert step_learning_rate(flags, 4, world_size=2) == 0.5 * flags.base_learning_rate
    assert step_learning_rate(flags, 3, world_size=2) == flags.base_learning_rate
    assert step_learning_rate(flags, 16, world_size=4) == 0.5**8 * flags.base_learning_rate


def test_large_seeds_train(train_pattern, tmp_path):
    """--seed of 18447 or more overflowed the per-step frame-sampling seed."""
    for seed in (18447, 2**40):
        train(tiny_flags(train_pattern, tmp_path / str(seed), "--max_steps=2", f"--seed={seed}"))
        assert [s for s, _ in list_checkpoints(tmp_path / str(seed))] == [2]


def test_penalty_reaches_only_the_moe_gate_and_expert_weights(train_pattern, tmp_path):
    # fidelity.md §5: moe_l2 * 0.5 * ||W||^2 over the MoE gate and expert weights only.
    # After one step, a huge penalty changes those weights and nothing else: the forward
    # pass was the same, Adam works element by element and clipping tensor by tensor.
    runs = {}
    for penalty in ("0", "1e9"):
        train(
            tiny_flags(
                train_pattern,
                tmp_path / penalty,
                "--max_steps=1",
                f"--regularization_penalty={penalty}",
            )
        )
        runs[penalty] = weights(tmp_path / penalty)
    changed = {name for name in runs["0"] if not torch.equal(runs["0"][name], runs["1e9"][name])}
    assert changed == {"classifier.gate_weights.0", "classifier.expert_weights"}


@pytest.mark.parametrize("readers", [0, 2])
def test_resuming_gives_the_weights_of_a_straight_run(train_pattern, tmp_path, readers):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    extra = (f"--num_readers={readers}", "--num_epochs=3")
    train(tiny_flags(train_pattern, straight, "--max_steps=10", *extra))
    train(tiny_flags(train_pattern, resumed, "--max_steps=5", *extra))
    assert [s for s, _ in list_checkpoints(resumed)] == [5]
    train(tiny_flags(train_pattern, resumed, "--max_steps=10", *extra))

    a, b = load_checkpoint(latest_checkpoint(straight)), load_checkpoint(latest_checkpoint(resumed))
    assert a.step == b.step == 10
    assert_same_state(a.model_state, b.model_state)
    for state_a, state_b in zip(
        a.optimizer_state["state"].values(), b.optimizer_state["state"].values(), strict=True
    ):
        assert_same_state(state_a, state_b)


def test_resume_keeps_the_checkpoints_model_flags_with_a_warning(train_pattern, tmp_path, caplog):
    train(tiny_flags(train_pattern, tmp_path, "--max_steps=2"))
    with caplog.at_level(logging.WARNING):
        train(tiny_flags(train_pattern, tmp_path, "--max_steps=3", "--netvlad_cluster_size=5"))
    assert "--netvlad_cluster_size=5" in caplog.text and "differs from 4" in caplog.text
    checkpoint = load_checkpoint(latest_checkpoint(tmp_path))
    assert checkpoint.step == 3 and checkpoint.flags.netvlad_cluster_size == 4
    model, restored = restore_model(tmp_path, -1, checkpoint.flags, "cpu")
    assert restored.step == 3 and not model.training


def test_start_new_model_starts_over(train_pattern, tmp_path):
    train(tiny_flags(train_pattern, tmp_path / "old", "--max_steps=3"))
    train(tiny_flags(train_pattern, tmp_path / "old", "--max_steps=2", "--start_new_model"))
    train(tiny_flags(train_pattern, tmp_path / "fresh", "--max_steps=2"))
    assert [s for s, _ in list_checkpoints(tmp_path / "old")] == [2]
    assert_same_state(weights(tmp_path / "old"), weights(tmp_path / "fresh"))


def test_training_stops_after_num_epochs_and_checkpoints_periodically(train_pattern, tmp_path):
    train(tiny_flags(train_pattern, tmp_path, "--num_epochs=2", "--export_model_steps=4"))
    batches = math.ceil(2 * TRAIN_VIDEOS / 8)  # the last partial batch is kept
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 8, 12, batches]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(train_pattern, tmp_path):
    # The learning rate becomes infinite for the third update: its weights are not finite,
    # so the loss of step 4 is NaN.
    diverging = ("--max_steps=8", "--learning_rate_decay=inf", "--learning_rate_decay_examples=16")
    flags = tiny_flags(train_pattern, tmp_path, *diverging, "--export_model_steps=2")
    with pytest.raises(TrainingError, match=r"loss of step 4 is nan.*model.ckpt-2.pt"):
        train(flags)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    good = load_checkpoint(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(t).all() for t in good.model_state.values())


def test_non_finite_weights_are_never_saved(train_pattern, tmp_path):
    diverging = ("--max_steps=8", "--learning_rate_decay=inf", "--learning_rate_decay_examples=16")
    flags = tiny_flags(train_pattern, tmp_path, *diverging, "--export_model_steps=1")
    with pytest.raises(
        TrainingError, match=r"weights are not finite after step 3.*model.ckpt-2.pt"
    ):
        train(flags)
    assert [s for s, _ in list_checkpoints(tmp_path)][-1] == 2


def test_unknown_loss_or_optimizer_fails_before_training(train_pattern, tmp_path):
    with pytest.raises(LossError, match="--label_loss='Xent'"):
        train(tiny_flags(train_pattern, tmp_path, "--label_loss=Xent"))
    with pytest.raises(TrainingError, match="--train_data_pattern is empty"):
        train(tiny_flags("", tmp_path))
    assert not tmp_path.joinpath("checkpoint.json").exists()


def wait_for_checkpoint_after(train_dir, step, process=None, timeout=900.0):
    """Wait until `train_dir` holds a checkpoint of a step after `step`. A `process` (the
    training's Popen) that exits first fails at once with its exit status; otherwise the
    wait is long, as fresh interpreters importing torch on a loaded 2-core machine are slow
    to start (a torchrun pair took 9 minutes to its first checkpoint at a load average of
    35), and only a process that never checkpoints reaches it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_checkpoints(train_dir)
        if found and found[-1][0] > step:
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the training exited with {process.returncode} before a checkpoint after "
                f"step {step} in {train_dir}"
            )
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint after step {step} in {train_dir} within {timeout} s")


def test_sigkill_at_any_moment_leaves_a_loadable_latest_checkpoint(train_pattern, tmp_path):
    # A checkpoint every step, killed at random moments (often while one is being written);
    # each round resumes from what the previous kill left.
    argv = tiny_argv(
        train_pattern,
        tmp_path,
        "--export_model_steps=1",
        "--num_epochs=1000",
        "--keep_checkpoints=2",
    )
    rng = random.Random(0)
    last_step = 0
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-m", "yt8m", "train", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_checkpoint_after(tmp_path, last_step, process)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        checkpoint = load_checkpoint(latest_checkpoint(tmp_path))
        assert checkpoint.step > last_step
        model, _ = restore_model(tmp_path, -1, checkpoint.flags, "cpu")
        assert all(torch.isfinite(p).all() for p in model.parameters())
        last_step = checkpoint.step
