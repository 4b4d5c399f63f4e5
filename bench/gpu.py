"""The training and inference path on a GPU: speed against the device's floor, data waits.

For each model (the seed's seven at the seed's batch size; one line of `MODELS` adds one),
in float32 and in bfloat16 autocast (``--amp``), eager and compiled (``--compile``), the
training step of `yt8m.train.training_step` (forward with the model's input transform,
loss, backward, per-tensor clipping, Adam), timed as the trainer runs it: no host sync
between steps. On a machine without CUDA it runs tiny models on the CPU and says that its
figures are not GPU figures (`tests/test_bench_gpu.py` runs it that way).

Rows run in the order eager float32, eager bfloat16, compiled bfloat16, compiled float32;
``--budget_s`` skips the rows that would start after that many seconds (listed as skipped).

Usage::

    python bench/gpu.py                                  # everything, synthetic TFRecords
    python bench/gpu.py --models netvlad,gru --compile off --data 'data/train*.tfrecord'
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yt8m.data.device_feed import DeviceFeed  # noqa: E402
from yt8m.data.loader import make_loader  # noqa: E402
from yt8m.data.synthetic import write_dataset  # noqa: E402
from yt8m.flags import Flags, parse_flags  # noqa: E402
from yt8m.losses import get_loss  # noqa: E402
from yt8m.models import build_model, count_trainable_parameters  # noqa: E402
from yt8m.models.sampling import KeyStream, sampling_base  # noqa: E402
from yt8m.objective import Objective  # noqa: E402
from yt8m.optim import build_optimizer  # noqa: E402
from yt8m.seed_models import SEED_MODELS  # noqa: E402
from yt8m.train import training_step  # noqa: E402

# Short name -> training flags. The seed's seven, in its README's order; NeXtVLAD's line
# goes here once it is on main, e.g. "nextvlad": [*shlex.split("--model=NeXtVLADModel ...")].
MODELS: dict[str, list[str]] = {
    name: seed.training_argv()
    for name, seed in zip(
        ["netvlad", "netfv", "gated_dbof", "soft_dbof", "rvlad", "gru", "lstm"],
        SEED_MODELS,
        strict=True,
    )
}

# The CPU run: the seed's flags with these sizes (a few seconds per row on two cores).
TINY_SIZES = {
    "--netvlad_cluster_size": 4,
    "--netvlad_hidden_size": 8,
    "--fv_cluster_size": 4,
    "--fv_hidden_size": 8,
    "--dbof_cluster_size": 32,
    "--dbof_hidden_size": 8,
    "--gru_cells": 8,
    "--lstm_cells": 8,
    "--iterations": 4,
    "--batch_size": 4,
    "--feature_sizes": "16,8",
    "--max_frames": 8,
    "--num_classes": 20,
}

# The device's peaks: bfloat16 and float32 (no TF32) matrix FLOP/s, memory bytes/s (read +
# write), keyed by a part of torch.cuda.get_device_name(). Other devices are measured.
DEVICE_PEAKS = {
    "H200": (
        790e12,
        67e12,
        4.3e12,
        "table: bf16 and copy measured on this workplace's H200s (8192^3 bf16 matmul "
        "769-798 TFLOP/s; device copy 4.3 TB/s), fp32 NVIDIA's figure (67 TFLOP/s)",
    ),
}

# Bytes per trainable parameter a step must move at least: the forward and the backward
# read the float32 weights (4 + 4), the backward writes their gradients (4), clipping
# reads them (4), Adam reads weights, gradients and both moments (16) and writes weights and
# moments (12).
BYTES_PER_PARAMETER = 44
GIB = 2**30

FIGURES = {
    "model": "short name (MODELS)",
    "prec": "fp32 (matmuls without TF32), or bf16: the forward under bfloat16 autocast (--amp)",
    "comp": "eager, or compiled: torch.compile of the model (--compile; --compile_backend)",
    "batch": "the seed's training batch size (tiny: 4)",
    "params": "trainable parameters",
    "GFLOP": "model FLOPs of one training step (forward + backward), counted by "
    "torch.utils.flop_counter.FlopCounterMode (matmuls, incl. each recurrent step's) on a "
    "CPU copy at batch 2, times batch/2 (they are linear in the batch)",
    "step ms": "mean wall time of one training step (yt8m.train.training_step) over --steps "
    "steps after --warmup, inputs resident on the device, synchronized only before and after",
    "ex/s": "training examples per second: batch / step",
    "MFU %": "model FLOP utilisation: GFLOP / step / the device's peak in the row's precision",
    "peak GiB": "peak device memory allocated by torch (max_memory_allocated) over the row's "
    "training steps (CPU: -)",
    "floor ms": "the least the step can take on the device: flop ms + byte ms",
    "flop ms": "GFLOP at the device's peak FLOP/s of the row's precision",
    "byte ms": "bytes the step must move at the device's memory bandwidth: 44 per parameter "
    "(weights read twice, gradients written and read, Adam's read and write), twice the "
    "tensors saved for the backward (written, then read; measured in the row's precision, "
    "without the weights or their bf16 copies) and the input batch",
    "x floor": "step ms / floor ms",
    "bound": "memory when byte ms >= flop ms, else compute: what bounds the floor",
    "fed ms": "mean step time over --fed_steps steps fed by the real loader (make_loader from "
    "the TFRecords, --workers workers, pinned blocks) through yt8m.data.device_feed",
    "wait %": "share of a fed step spent waiting for data: (fed ms - step ms) / fed ms, 0 "
    "when the loader keeps up",
    "infer/s": "inference videos/s: eval-mode forward passes (inference_mode, the row's "
    "precision and compilation) of --infer_batch videos resident on the device",
}


@dataclasses.dataclass(frozen=True)
class Peaks:
    bf16: float  # FLOP/s
    fp32: float  # FLOP/s
    bandwidth: float  # bytes/s, read + write
    source: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Mean seconds of `fn` over `repeats` calls, synchronized before and after only."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def measured_peaks(device: torch.device, tiny: bool) -> Peaks:
    """Best of a few square matmuls (bf16, fp32) and of a device copy."""
    n, mib = (1024, 64) if tiny else (8192, 1024)
    rates = []
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty_like(a)
        torch.mm(a, a, out=out)
        rates.append(
            2
            * n**3
            / min(_timed(lambda a=a, o=out: torch.mm(a, a, out=o), device, 3) for _ in range(3))
        )
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = min(_timed(lambda: dst.copy_(src), device, 3) for _ in range(3))
    return Peaks(rates[0], rates[1], 2 * src.numel() / copy, "measured here")


def device_peaks(device: torch.device, tiny: bool) -> Peaks:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32, bandwidth, source) in DEVICE_PEAKS.items():
            if key in name:
                return Peaks(bf16, fp32, bandwidth, source)
    return measured_peaks(device, tiny)


def model_flags(name: str, tiny: bool, workers: int) -> Flags:
    argv = list(MODELS[name])
    if tiny:
        sizes = {**TINY_SIZES}
        argv = [a for a in argv if a.split("=", 1)[0] not in sizes]
        argv += [f"{flag}={value}" for flag, value in sizes.items()]
    return parse_flags([*argv, f"--num_readers={workers}", "--num_epochs=1000000"], "train")


def synthetic_batch(flags: Flags, batch_size: int, device: torch.device) -> dict:
    """A loader-like batch on `device`: uint8 frames, zero padding rows, lengths, labels."""
    g = torch.Generator().manual_seed(0)
    t = flags.max_frames
    width = sum(size for _, size in flags.feature_list())
    num_frames = torch.randint(t // 3, t + 1, (batch_size,), generator=g)
    inputs = torch.randint(0, 256, (batch_size, t, width), generator=g, dtype=torch.uint8)
    inputs *= (torch.arange(t).unsqueeze(0) < num_frames.unsqueeze(1)).unsqueeze(-1)
    labels = torch.rand(batch_size, flags.num_classes, generator=g) < 3.4 / flags.num_classes
    batch = {"inputs": inputs, "num_frames": num_frames, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def count_flops(flags: Flags) -> int:
    """FLOPs of one forward + backward at flags.batch_size (counted at batch 2 on the CPU)."""
    torch.manual_seed(0)
    model = build_model(flags).train()
    batch = synthetic_batch(flags, 2, torch.device("cpu"))
    loss_fn = get_loss(flags.label_loss, flags.alpha)
    with FlopCounterMode(display=False) as counter:
        p = model(batch["inputs"], batch["num_frames"], sampling_base(0))
        (loss_fn(p, batch["labels"]) + model.regularization_loss()).backward()
    return counter.get_total_flops() * flags.batch_size // 2


def saved_bytes(model: torch.nn.Module, step: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for the backward in one step, the weights and
    their autocast copies (a parameter's shape in a lower precision) aside."""
    weights = {p.data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters()}
    seen: dict[tuple[int, tuple[int, ...]], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        cast_weight = tuple(t.shape) in shapes and t.dtype in (torch.bfloat16, torch.float16)
        if t.data_ptr() not in weights and not cast_weight:
            seen[(t.data_ptr(), tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


class Bench:
    """One run: the device, its peaks, the data, the settings of every row."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tiny = args.tiny or self.device.type == "cpu"
        self.peaks = device_peaks(self.device, self.tiny)
        self.flops: dict[str, int] = {}
        self.activations: dict[tuple[str, str], int] = {}

    def row(self, name: str, precision: str, compiled: bool, data: str) -> dict:
        args, device = self.args, self.device
        flags = dataclasses.replace(
            model_flags(name, self.tiny, args.workers), amp=precision == "bf16"
        )
        if name not in self.flops:
            self.flops[name] = count_flops(flags)
        torch.manual_seed(0)
        model = build_model(flags).to(device).train()
        parameters = count_trainable_parameters(model)
        optimizer = build_optimizer(model.parameters(), flags.optimizer, flags.base_learning_rate)
        trained = model
        if compiled:
            torch._dynamo.reset()  # no row inherits another's graphs (nor their recompile limit)
            trained = torch.compile(model, backend=args.compile_backend)
        objective = Objective(flags, device)  # the trainer's loss (yt8m.objective)
        keys = KeyStream(sampling_base(0), 0, device)
        lr = flags.base_learning_rate
        resident = synthetic_batch(flags, flags.batch_size, device)

        def step(batch: dict = resident, module: torch.nn.Module = trained) -> None:
            training_step(module, model, optimizer, objective, flags, batch, keys.next(), lr)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            step()
        step_s = _timed(step, device, args.steps)
        peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
        if (name, precision) not in self.activations:
            self.activations[(name, precision)] = saved_bytes(model, lambda: step(module=model))
        fed_s = self._fed(flags, data, step)
        infer_rate = self._inference(model, trained, flags)
        flops = self.flops[name]
        peak_flops = self.peaks.bf16 if precision == "bf16" else self.peaks.fp32
        moved = (
            BYTES_PER_PARAMETER * parameters
            + 2 * self.activations[(name, precision)]
            + resident["inputs"].numel()
        )
        flop_s, byte_s = flops / peak_flops, moved / self.peaks.bandwidth
        return {
            "model": name,
            "prec": precision,
            "comp": "compiled" if compiled else "eager",
            "batch": flags.batch_size,
            "params": parameters,
            "GFLOP": flops / 1e9,
            "step ms": step_s * 1e3,
            "ex/s": flags.batch_size / step_s,
            "MFU %": 100 * flops / step_s / peak_flops,
            "peak GiB": peak,
            "floor ms": (flop_s + byte_s) * 1e3,
            "flop ms": flop_s * 1e3,
            "byte ms": byte_s * 1e3,
            "x floor": step_s / (flop_s + byte_s),
            "bound": "memory" if byte_s >= flop_s else "compute",
            "fed ms": fed_s * 1e3,
            "wait %": 100 * max(fed_s - step_s, 0.0) / fed_s,
            "infer/s": infer_rate,
        }

    def _fed(self, flags: Flags, data: str, step: Callable[..., None]) -> float:
        """Mean step time fed by the real loader (workers started, warmed up first)."""
        loader = make_loader(flags, data, training=True, pin_memory=self.device.type == "cuda")
        feed = iter(DeviceFeed(loader, self.device))
        for _ in range(self.args.warmup + 1):
            step(next(feed)[1])
        seconds = _timed(lambda: step(next(feed)[1]), self.device, self.args.fed_steps)
        feed.close()
        return seconds

    def _inference(self, model: torch.nn.Module, trained: torch.nn.Module, flags: Flags) -> float:
        batch = synthetic_batch(flags, self.args.infer_batch, self.device)
        keys = KeyStream(sampling_base(0, 0, "predict"), 0, self.device)
        model.eval()

        def forward() -> None:
            with torch.inference_mode():
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=flags.amp):
                    trained(batch["inputs"], batch["num_frames"], keys.next())

        for _ in range(self.args.warmup):
            forward()
        seconds = _timed(forward, self.device, self.args.steps)
        model.train()
        return self.args.infer_batch / seconds


def _synthetic_data(args: argparse.Namespace, tiny: bool, root: str) -> str:
    """TFRecords in the seed's format (tiny: TINY_SIZES'), read once into the page cache."""
    flags = model_flags(next(iter(MODELS)), tiny, 0)
    sizes = tuple(size for _, size in flags.feature_list())
    patterns = write_dataset(
        root,
        videos={"train": args.videos},
        shards=max(args.workers, 1) * 2,
        classes=flags.num_classes,
        frames=(flags.max_frames // 5, flags.max_frames),
        feature_sizes=sizes,
        levels=("frame",),
    )
    return patterns["frame"]["train"]


def _warm_page_cache(pattern: str) -> int:
    total = 0
    for path in sorted(Path(pattern).parent.glob(Path(pattern).name)):
        total += len(path.read_bytes())
    return total


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _parser() -> argparse.ArgumentParser:
    epilog = "Figures (one row per model, precision and compilation):\n" + "\n".join(
        f"  {name:<9} {text}" for name, text in FIGURES.items()
    )
    epilog += (
        "\n\nHeader lines: the device and the peaks used (DEVICE_PEAKS for a known device, "
        "else measured: best of 3 square matmuls per precision and of a device copy), the "
        "loader's workers and the TFRecords it reads. On a CPU the sizes are tiny "
        "(TINY_SIZES) and the figures are not GPU figures."
    )
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="both")
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--fed_steps", type=int, default=20, help="timed loader-fed steps")
    parser.add_argument("--infer_batch", type=int, default=1024, help="videos per forward")
    parser.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"loader workers (default {workers}: "
        "the CPUs less two, at most 8; 0: read in the main process)",
    )
    parser.add_argument("--data", help="TFRecords glob to feed from (default: synthetic)")
    parser.add_argument("--videos", type=int, default=1000, help="synthetic videos to write")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (always on a CPU)")
    parser.add_argument("--budget_s", type=float, help="skip rows starting after this")
    parser.add_argument("--json", help="also write the rows to this file")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {','.join(MODELS)}")
    precisions = [p.strip() for p in args.precisions.split(",")]
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    started = time.monotonic()
    bench = Bench(args)
    device = bench.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# bench/gpu.py  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"# command: {' '.join([Path(sys.executable).name, 'bench/gpu.py', *(argv or sys.argv[1:])])}"
    )
    print(f"# device: {device} ({name}), torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(
        f"# TF32: matmuls {torch.backends.cuda.matmul.allow_tf32}, "
        f"cuDNN {torch.backends.cudnn.allow_tf32}"
    )
    if bench.tiny:
        print("# CPU RUN WITH TINY MODELS: THESE ARE NOT GPU FIGURES")
    p = bench.peaks
    print(
        f"# peaks: bf16 {p.bf16 / 1e12:.3g} TFLOP/s, fp32 {p.fp32 / 1e12:.3g} TFLOP/s, "
        f"memory {p.bandwidth / 1e12:.3g} TB/s ({p.source})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _synthetic_data(args, bench.tiny, tmp)
        cached = _warm_page_cache(data)
        print(
            f"# data: {data} ({cached / 2**20:.0f} MiB in the page cache), {args.workers} workers"
        )
        columns = list(FIGURES)
        print(" | ".join(columns), flush=True)
        rows, skipped = [], []
        order = [(c, p) for c in compiles for p in (precisions if not c else precisions[::-1])]
        for compiled, precision in order:
            for model in names:
                if args.budget_s is not None and time.monotonic() - started > args.budget_s:
                    skipped.append(f"{model}/{precision}/{'compiled' if compiled else 'eager'}")
                    continue
                row = bench.row(model, precision, compiled, data)
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the row's model and optimizer are gone
                rows.append(row)
                print(" | ".join(_cell(row[c]) for c in columns), flush=True)
    if skipped:
        print(f"# skipped (--budget_s={args.budget_s}): {', '.join(skipped)}")
    print(f"# {time.monotonic() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": name, "tiny": bench.tiny, "rows": rows}, indent=1)
        )
    return rows


if __name__ == "__main__":
    main()
