"""The training loop as a GPU needs it, checked on the CPU: no host sync between logging
steps, batches copied ahead of the step that uses them, --amp and --compile close to
float32, frame sampling that torch.compile traces without a graph break.

The tiny gated NetVLAD of test_train (fidelity.md §4, §5) trains in this process."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.test_train import CLASSES, scalars, tiny_flags, write_tiny_training_set
from yt8m import train as train_module
from yt8m.checkpoint import list_checkpoints
from yt8m.data.device_feed import DeviceFeed
from yt8m.models import frame_level as fl
from yt8m.models.sampling import sampling_base
from yt8m.train import TrainingError, train

YT8M = Path(train_module.__file__).resolve().parent


@pytest.fixture(scope="module")
def train_pattern(tmp_path_factory):
    return write_tiny_training_set(tmp_path_factory.mktemp("data"), 60)


# ---- host syncs per step -----------------------------------------------------------------

# Calls that make the host wait for a device (on a GPU); counted here on CPU tensors.
SYNCING_METHODS = [
    "item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
    "__array__", "nonzero", "masked_select", "unique",
]  # fmt: skip
# The one call site allowed to read a tensor on the CPU: it does so only when the
# gradients are on the CPU (yt8m.optim.clip_per_tensor_ scales only the clipped ones).
CPU_ONLY = {("optim.py", "clip_per_tensor_")}


class SyncCounter:
    """Counts syncing calls per training step; a step starts at the model's forward."""

    def __init__(self, monkeypatch) -> None:
        self.step = 0
        self.calls: Counter[tuple[int, str]] = Counter()
        for name in SYNCING_METHODS:
            self._wrap(monkeypatch, torch.Tensor, name)
        for name in ("nonzero", "unique", "masked_select"):
            self._wrap(monkeypatch, torch, name)
        self._wrap(monkeypatch, torch.Tensor, "__getitem__", only=self._boolean_index)
        self._wrap(monkeypatch, torch.cuda, "synchronize")

    @staticmethod
    def _boolean_index(_tensor=None, index=None, *args, **kwargs) -> bool:
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    def _wrap(self, monkeypatch, owner, name, only=None) -> None:
        original = getattr(owner, name)
        counter = self

        def wrapper(*args, **kwargs):
            if only is None or only(*args, **kwargs):
                counter._count(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    def _count(self, name: str) -> None:
        """Attributed to the nearest caller inside yt8m; the loader (yt8m/data) works on its
        own host memory by design and is not counted."""
        frame = sys._getframe(2)
        while frame is not None:
            path = Path(frame.f_code.co_filename).resolve()
            if YT8M in path.parents:
                break
            frame = frame.f_back
        if frame is None:
            return
        if path.parent.name == "data" or (path.name, frame.f_code.co_name) in CPU_ONLY:
            return
        self.calls[(self.step, f"{path.name}:{frame.f_code.co_name}:{name}")] += 1

    def start_step(self, *_) -> None:
        self.step += 1

    def per_step(self) -> dict[int, list[str]]:
        steps: dict[int, list[str]] = {}
        for (step, site), n in self.calls.items():
            steps.setdefault(step, []).append(f"{site} x{n}")
        return steps


def test_no_host_sync_between_logging_steps(train_pattern, tmp_path, monkeypatch):
    """issue 15: the loop never waits for the device between steps. Only step 1, every
    METRICS_EVERY-th step (losses, GAP, TensorBoard) and the last one read device values."""
    counter = SyncCounter(monkeypatch)
    build = train_module.build_model

    def counted_model(flags):
        model = build(flags)
        model.register_forward_pre_hook(counter.start_step)
        return model

    monkeypatch.setattr(train_module, "build_model", counted_model)
    flags = tiny_flags(train_pattern, tmp_path, "--max_steps=12", "--num_epochs=2")
    train(flags)
    assert counter.step == 12
    syncing = counter.per_step()
    assert set(syncing) <= {0, 1, 10, 12}, syncing  # 0: before the first step
    assert syncing.get(10), "the logging step reads the losses"


def test_a_non_finite_loss_stops_training_within_the_logging_interval(train_pattern, tmp_path):
    """The loss of step 4 is NaN (an infinite learning rate for the third update): training
    stops when the losses are next read (step 10), naming step 4 and no checkpoint."""
    diverging = ("--max_steps=30", "--learning_rate_decay=inf", "--learning_rate_decay_examples=16")
    flags = tiny_flags(train_pattern, tmp_path, *diverging, "--export_model_steps=1000")
    with pytest.raises(TrainingError, match=r"loss of step 4 is nan.*checkpoint is none"):
        train(flags)
    assert list_checkpoints(tmp_path) == []
    assert set(scalars(tmp_path, "train/loss")) == {1}  # stopped at step 10, before logging


# ---- --amp and --compile -----------------------------------------------------------------


def logged_losses(train_pattern, train_dir, *extra) -> dict[int, float]:
    train(tiny_flags(train_pattern, train_dir, "--max_steps=11", "--num_epochs=2", *extra))
    return scalars(train_dir, "train/total_loss")


def test_amp_training_stays_close_to_float32(train_pattern, tmp_path):
    """--amp: bfloat16 autocast (CPU autocast here) of every VLAD block and the MoE, float32
    probabilities and loss. Losses at steps 1, 10 and 11 within 2% of float32's."""
    reference = logged_losses(train_pattern, tmp_path / "fp32")
    amp = logged_losses(train_pattern, tmp_path / "amp", "--amp")
    assert set(amp) == set(reference) == {1, 10, 11}
    for step, loss in reference.items():
        assert amp[step] == pytest.approx(loss, rel=0.02), step


def test_compile_training_equals_eager_training(train_pattern, tmp_path, monkeypatch):
    """--compile: the graphs torch.compile captures (dynamo and AOTAutograd, forward and
    backward; run by the aot_eager backend here: inductor's C++ code generation takes
    minutes on two cores) train as eager does: losses within 1e-5 (relative)."""
    compile_ = torch.compile
    backends = []

    def aot_eager(model, **kwargs):
        backends.append(model)
        return compile_(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", aot_eager)
    reference = logged_losses(train_pattern, tmp_path / "eager")
    compiled = logged_losses(train_pattern, tmp_path / "compiled", "--compile")
    assert len(backends) == 1
    assert set(compiled) == set(reference)
    for step, loss in reference.items():
        assert compiled[step] == pytest.approx(loss, rel=1e-5), step


@pytest.mark.parametrize("model", ["netvlad", "netfv"])
def test_sampling_compiles_without_graph_breaks(model):
    """The frames are drawn by integer hashing of a key tensor (no torch.Generator), so
    dynamo captures the whole forward pass, training mode, in one graph."""
    torch.manual_seed(0)
    cls = fl.NetVLADModelLF if model == "netvlad" else fl.NetFVModelLF
    m = cls(CLASSES, (6, 3), iterations=7, cluster_size=4, hidden_size=8, gating=True).train()
    frames = torch.randint(0, 256, (4, 10, 9), dtype=torch.uint8)
    explained = torch._dynamo.explain(m)(frames, torch.tensor([3, 10, 5, 0]), sampling_base(0))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


# ---- the device feed ---------------------------------------------------------------------


class FakeCopies:
    """Records the feed's calls; a copy completes when the test says so."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.completed: set[int] = set()

    def start(self, batch):
        self.log.append(("start", batch["n"]))
        return {"n": batch["n"], "on_device": True}, batch["n"]

    def use(self, device_batch, event):
        self.log.append(("use", event))

    def done(self, event):
        return event in self.completed

    def wait(self, event):
        self.log.append(("wait", event))
        self.completed.add(event)


def test_the_next_batch_is_copied_before_the_current_one_is_handed_out():
    """The copy of batch k+1 is issued before batch k goes to the step, so that it overlaps
    the step; batch k's compute waits for its own copy on the device."""
    copies = FakeCopies()
    handed = []
    for host, moved in DeviceFeed(({"n": i} for i in range(4)), "cpu", copies=copies):
        handed.append(moved["n"])
        assert moved["on_device"] and host["n"] == moved["n"]
        started = [n for what, n in copies.log if what == "start"]
        assert started == list(range(min(moved["n"] + 2, 4)))  # one ahead
        assert ("use", moved["n"]) in copies.log
    assert handed == [0, 1, 2, 3]


def test_host_batches_are_held_until_their_copy_is_done():
    """A host batch (its loader block) is let go only once its copy completed; when more
    than `held` copies are pending the host waits for the oldest, and at the end for all."""
    copies = FakeCopies()
    feed = DeviceFeed(({"n": i} for i in range(8)), "cpu", copies=copies, held=2)
    iterator = iter(feed)
    next(iterator)
    next(iterator)
    assert not any(what == "wait" for what, _ in copies.log)  # two pending: no wait
    copies.completed.add(0)
    next(iterator)  # batch 0 done: let go without waiting
    assert not any(what == "wait" for what, _ in copies.log)
    next(iterator)
    assert ("wait", 1) in copies.log  # three pending: the oldest waited for
    for _ in iterator:
        pass
    waited = {n for what, n in copies.log if what == "wait"}
    assert waited | copies.completed == set(range(8))


def test_on_the_cpu_batches_pass_through():
    batches = [{"n": i, "t": torch.zeros(2)} for i in range(3)]
    for (host, moved), batch in zip(DeviceFeed(batches, "cpu"), batches, strict=True):
        assert host is moved is batch


# ---- eval / infer: the device one batch ahead of the CPU's ranking -----------------------


def test_predictions_are_handed_out_one_forward_pass_behind(monkeypatch):
    """predict issues batch k+1's forward pass before it hands batch k's probabilities to
    the caller (who ranks the top k on the CPU meanwhile); the results are those of a
    plain loop over the batches, with the key of each batch."""
    from yt8m.distributed import Process
    from yt8m.flags import parse_flags
    from yt8m.inference import predict
    from yt8m.models.sampling import step_key

    torch.manual_seed(0)
    model = fl.NetVLADModelLF(CLASSES, (6, 3), iterations=4, cluster_size=4, hidden_size=8)
    model.eval()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(len(calls)))
    batches = [
        {
            "video_ids": [f"v{i}"] * 3,
            "inputs": torch.randint(0, 256, (3, 10, 9), dtype=torch.uint8),
            "num_frames": torch.tensor([10, 4, 1]),
        }
        for i in range(4)
    ]
    flags = parse_flags(["--seed=3", "--progress=False"], "infer")
    process = Process(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    base = sampling_base(3, 0, "predict")
    for k, (batch, probabilities) in enumerate(predict(model, batches, flags, process, "t")):
        assert batch is batches[k]
        assert len(calls) == min(k + 2, 4)  # the next batch's forward pass already issued
        with torch.inference_mode():
            expected = model(batch["inputs"], batch["num_frames"], step_key(base, k))
        calls.pop()
        torch.testing.assert_close(probabilities, expected)


def test_a_rank_whose_share_ends_early_reads_it_again_until_the_common_last_step(
    monkeypatch, caplog
):
    """Under torchrun every rank trains until the step all ranks' batch counts allow; only
    records dropped by --skip_corrupt_records can end a share earlier than counted: that
    rank then reads its share again from the start (with a warning), in step with the rest."""
    from yt8m.distributed import Process

    made = []

    def loader(flags, pattern, *, start_batch, **kwargs):
        made.append(start_batch)
        return [{"n": start_batch + i} for i in range(3 - start_batch)]

    monkeypatch.setattr(train_module, "make_loader", loader)
    process = Process(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    batches = train_module._Batches(tiny_flags("unused", "unused"), process, start_batch=1)
    got = [batches.next(step, last_step=6)[0]["n"] for step in range(1, 6)]
    assert got == [1, 2, 0, 1, 2] and made == [1, 0]
    assert "data ended at step 3, before step 6" in caplog.text
    assert batches.next(6, last_step=6) is None and made == [1, 0]  # the end: no new pass
