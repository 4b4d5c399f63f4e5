"""Training-step speed and peak memory of the seed's seven models at the seed's sizes,
and of linrongc's NeXtVLAD (``nextvlad``; its 3-branch mixture: ``mix_nextvlad``).

For each model (built from the seed README's own command line, or the training line of
linrongc's script with ``--num_classes=3862``, the 2018 vocabulary; at its batch size):
forward (the model's input transform of the frames it reads included) + loss
(`yt8m.objective`, as `yt8m train`: the mixture's branch losses included) + backward +
per-tensor clipping + Adam step on synthetic inputs as the loader gives them
(``[B, 300, 1152]`` uint8 frames, zero padding rows, random lengths).

Reported against a roofline floor measured in the same run:
``floor = FLOPs / matmul rate + optimizer bytes / copy rate`` where
* FLOPs: the matmul FLOPs of one forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (mm/bmm/addmm/RNN gemms);
* matmul rate: best of a few 4096 x 4096 float32 matmuls, measured right before the
  model's steps (the machine is shared: each ratio uses peers measured next to it);
* optimizer bytes: 32 per parameter, the least a per-tensor-clipped Adam step must move
  (read the gradient once for its norm; read p, g, m, v and write p, m, v);
* copy rate: best of a few 512 MiB ``copy_`` (read + write bytes per second).

Allocator: by default freed memory is kept for reuse, as ``yt8m train`` does on the CPU
(``--allocator system`` for glibc's default, which page-faults a new 1.1 GB gradient
every step). Step recipe (the one the trainer should match): ``zero_grad(set_to_none=True)``;
forward; loss + regularisation; backward; per-tensor clipping with two foreach kernels
(``yt8m.optim.clip_per_tensor_``); ``torch.optim.Adam(fused=True)``.

Peak memory (``--memory``): each model trains 2 steps in a fresh subprocess; the figure
is peak RSS (VmHWM) minus the RSS after importing torch and yt8m, i.e.
parameters, gradients, Adam state, activations, inputs and allocator slack.

Usage::

    .venv/bin/python bench/models.py                       # all seven and nextvlad, 3 steps
    .venv/bin/python bench/models.py --models netvlad,netfv,rvlad --steps 2
    .venv/bin/python bench/models.py --memory              # adds the peak memory column
    .venv/bin/python bench/models.py --memory-only         # peak memory alone
    .venv/bin/python bench/models.py --clock cpu           # CPU seconds: for a busy machine

Measured facts behind the recipe: ``THP_MEM_ALLOC_ENABLE=1`` (2 MiB pages for large
tensors) made the 1.1 GB hidden-weight gradient matmul of the VLAD models 4-8x slower on
some steps (huge-page faults); a full-width input batch norm sliced per branch cost a
zero-filled ``[B, N, 1152]`` gradient and a strided (4x slower) batch norm.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.linrongc import MIXTURE_SCRIPT, NEXTVLAD_SCRIPT, training_argv  # noqa: E402
from tests.seed import training_commands  # noqa: E402
from yt8m.cpu_memory import keep_freed_memory  # noqa: E402
from yt8m.flags import Flags, parse_flags  # noqa: E402
from yt8m.models import build_model, count_trainable_parameters  # noqa: E402
from yt8m.models.sampling import sampling_base  # noqa: E402
from yt8m.objective import Objective  # noqa: E402
from yt8m.optim import clip_per_tensor_  # noqa: E402

# Short names for the seed's commands, in the README's order.
SEED_NAMES = ["netvlad", "netfv", "gated_dbof", "soft_dbof", "rvlad", "gru", "lstm"]
OPTIMIZER_BYTES_PER_PARAMETER = 32
GIB = 2**30


LINRONGC = {"nextvlad": NEXTVLAD_SCRIPT, "mix_nextvlad": MIXTURE_SCRIPT}
DEFAULT_NAMES = [*SEED_NAMES, "nextvlad"]


def seed_flags(name: str) -> Flags:
    """The training flags of a seed model or of one of linrongc's scripts."""
    if name in LINRONGC:
        return parse_flags([*training_argv(LINRONGC[name]), "--num_classes=3862"], "train")
    argv = [a for a in training_commands()[SEED_NAMES.index(name)] if "data_pattern" not in a]
    return parse_flags(argv, "train")


def machine() -> str:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


CLOCKS = {
    "wall": time.perf_counter,
    # CPU seconds of this process per thread: steadier than wall time on a shared machine.
    "cpu": lambda: time.process_time() / torch.get_num_threads(),
}
clock = CLOCKS["wall"]


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def matmul_rate(n: int = 4096, repeats: int = 4) -> float:
    """float32 FLOP/s of an n x n x n matmul (best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b, out=out), repeats)


def copy_rate(mib: int = 512, repeats: int = 4) -> float:
    """Bytes/s read + written by ``dst.copy_(src)`` (best of `repeats`)."""
    src = torch.randn(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() * 4 / best_time(lambda: dst.copy_(src), repeats)


def synthetic_batch(flags: Flags, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Loader-shaped inputs: uint8 frames, zero padding rows, random lengths, labels."""
    b, t = flags.batch_size, flags.max_frames
    width = sum(size for _, size in flags.feature_list())
    num_frames = torch.randint(t // 3, t + 1, (b,), generator=generator)
    inputs = torch.randint(0, 256, (b, t, width), generator=generator, dtype=torch.uint8)
    inputs *= (torch.arange(t).unsqueeze(0) < num_frames.unsqueeze(1)).unsqueeze(-1)
    labels = torch.rand(b, flags.num_classes, generator=generator) < 3.4 / flags.num_classes
    return inputs, num_frames, labels


def make_step(model: torch.nn.Module, flags: Flags):
    optimizer = torch.optim.Adam(
        model.parameters(), lr=flags.base_learning_rate, eps=1e-8, fused=True
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    objective = Objective(flags, torch.device("cpu"))

    def step(inputs, num_frames, labels, key):
        optimizer.zero_grad(set_to_none=True)
        predictions = model(inputs, num_frames, key)
        _, loss = objective(model, predictions, labels, {}, inputs, num_frames, key)
        loss.backward()
        clip_per_tensor_(parameters, flags.clip_gradient_norm)
        optimizer.step()
        return loss

    return step


def forward_backward_flops(model: torch.nn.Module, flags: Flags, batch, key) -> int:
    inputs, num_frames, labels = batch
    objective = Objective(flags, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        predictions = model(inputs, num_frames, key)
        objective(model, predictions, labels, {}, inputs, num_frames, key)[1].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_model(name: str, steps: int) -> dict:
    flags = seed_flags(name)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(flags).train()
    batch = synthetic_batch(flags, generator)
    key = sampling_base(0)  # the frame-sampling key
    parameters = count_trainable_parameters(model)
    flops = forward_backward_flops(model, flags, batch, key)
    step = make_step(model, flags)
    step(*batch, key)  # warm-up: allocates the Adam state
    flop_rate, byte_rate = matmul_rate(), copy_rate()  # the peers, measured next to the steps
    seconds = best_time(lambda: step(*batch, key), steps)
    floor = flops / flop_rate + parameters * OPTIMIZER_BYTES_PER_PARAMETER / byte_rate
    return {
        "model": name,
        "batch": flags.batch_size,
        "parameters": parameters,
        "gflop": flops / 1e9,
        "step_s": seconds,
        "videos_s": flags.batch_size / seconds,
        "floor_s": floor,
        "ratio": seconds / floor,
        "matmul_gflops": flop_rate / 1e9,
        "copy_gbs": byte_rate / 1e9,
    }


def peak_memory_child(name: str) -> None:
    """Subprocess body: train 2 steps, print peak RSS growth in bytes as JSON."""
    baseline = _status_bytes("VmRSS")
    flags = seed_flags(name)
    generator = torch.Generator().manual_seed(0)
    model = build_model(flags).train()
    batch = synthetic_batch(flags, generator)
    step = make_step(model, flags)
    for _ in range(2):
        step(*batch, sampling_base(0))
    print(json.dumps({"model": name, "peak_bytes": _status_bytes("VmHWM") - baseline}))


def _status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: now; VmHWM: peak since exec — unlike
    ru_maxrss, which keeps the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory(name: str, allocator: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, f"--allocator={allocator}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"] / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_NAMES), help="comma-separated subset")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (best of)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--memory-only", action="store_true", help="only measure peak memory")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="cpu: CPU time per thread"
    )
    parser.add_argument(
        "--allocator",
        choices=["keep", "system"],
        default="keep",
        help="keep: freed memory reused, as `yt8m train` does on the CPU (yt8m.cpu_memory); "
        "system: glibc's default (fresh pages for every large tensor)",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allocator == "keep":
        keep_freed_memory()
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return
    global clock
    clock = CLOCKS[args.clock]
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SEED_NAMES) - set(LINRONGC))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {','.join([*SEED_NAMES, *LINRONGC])}")

    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date:    {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"clock:   {args.clock}; allocator: {args.allocator}")
    header = (
        f"{'model':<11}{'batch':>6}{'params':>13}{'GFLOP':>7}{'step s':>8}{'videos/s':>9}"
        f"{'floor s':>8}{'x floor':>8}{'mm GF/s':>8}{'copy GB/s':>10}"
    )
    if args.memory:
        header += f"{'peak GiB':>9}"
    if args.memory_only:
        print(f"{'model':<11}{'peak GiB':>9}")
        for name in names:
            print(f"{name:<11}{peak_memory(name, args.allocator):>9.2f}", flush=True)
        return
    print(header)
    for name in names:
        r = time_model(name, args.steps)
        line = (
            f"{r['model']:<11}{r['batch']:>6}{r['parameters']:>13,}{r['gflop']:>7.0f}"
            f"{r['step_s']:>8.2f}{r['videos_s']:>9.1f}{r['floor_s']:>8.2f}{r['ratio']:>8.2f}"
            f"{r['matmul_gflops']:>8.0f}{r['copy_gbs']:>10.1f}"
        )
        if args.memory:
            line += f"{peak_memory(name, args.allocator):>9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
