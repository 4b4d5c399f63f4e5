"""Size of a full-size checkpoint and the cost of its checksums (issue 11).

Builds one of the seed's models at the seed's size (default: gated NetVLAD, the largest),
gives Adam its state (one step on zero gradients: the two moments, as after any step),
writes the checkpoint with `yt8m.checkpoint.save_checkpoint` and loads it back with
`load_checkpoint`. Reported: the file's size; the seconds of the whole save and load, of
the checksums alone (`payload_checksums` over the same payload) and of `torch.load` alone
(without verification), all measured in the same run.

Needs about 3x the checkpoint's size in memory (weights, gradients, Adam's moments, then
the loaded copy) and its size on disk, in a temporary folder (``--dir``).

Usage::

    .venv/bin/python bench/checkpoint.py                  # gated NetVLAD: ~4 GB
    .venv/bin/python bench/checkpoint.py --model gru --dir /tmp
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.models import SEED_NAMES, machine, seed_flags  # noqa: E402
from yt8m.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from yt8m.checkpoint_checksum import payload_checksums  # noqa: E402
from yt8m.models import build_model, count_trainable_parameters  # noqa: E402

GB = 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=SEED_NAMES, default="netvlad")
    parser.add_argument("--dir", default=None, help="where the checkpoint is written")
    args = parser.parse_args()
    flags = seed_flags(args.model)
    torch.manual_seed(0)
    model = build_model(flags)
    optimizer = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p in model.parameters():
        p.grad = None
    parameters = count_trainable_parameters(model)
    print(f"{datetime.date.today()} {machine()}")
    print(f"{args.model}: {parameters:,} parameters")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        start = time.perf_counter()
        path = save_checkpoint(folder, 1, model, flags, optimizer, {"step": 1})
        save_s = time.perf_counter() - start
        size = path.stat().st_size
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        start = time.perf_counter()
        payload_checksums(payload)
        checksum_s = time.perf_counter() - start
        del model, optimizer, payload  # each load below holds one more copy
        start = time.perf_counter()
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        bare_s = time.perf_counter() - start
        del loaded
        start = time.perf_counter()
        checkpoint = load_checkpoint(path)
        load_s = time.perf_counter() - start
        del checkpoint
    print(f"file: {size / GB:.2f} GB ({size / (4 * parameters):.3f} x the float32 weights)")
    print(f"save_checkpoint {save_s:.1f} s; load_checkpoint {load_s:.1f} s")
    print(
        f"checksums of weights + Adam state alone {checksum_s:.2f} s ({size / GB / checksum_s:.1f} GB/s)"
    )
    print(f"torch.load alone {bare_s:.1f} s: verification adds {load_s - bare_s:+.1f} s")


if __name__ == "__main__":
    main()
