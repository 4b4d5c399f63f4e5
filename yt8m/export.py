"""`yt8m export`: one ``.safetensors`` file holding a checkpoint's weights and flag table.

    yt8m export --train_dir=DIR --dtype=bfloat16 --output=model.safetensors --max_bytes=1000000000

The 2018 competition allowed at most 1 GB of weights (successors.md §3). The file holds
every tensor of the model's state, the floating ones cast to ``--dtype`` (integer
buffers kept), and in its metadata the flag table (JSON), the step, the source checkpoint,
the dtype and which weights were taken (the EMA when the checkpoint has one, unless
``--use_ema=False``). `yt8m eval` and `yt8m infer` accept the file as ``--train_dir``: the
model is rebuilt from its flags and the weights are cast back to float32, so float16 or
bfloat16 files change predictions only by the rounding of the weights
(`tests/test_export.py` measures it). The size in bytes is printed; with ``--max_bytes``
a larger file is an error and nothing is written. Like a checkpoint, the file carries a
CRC32C of every tensor and of the flag table (metadata ``checksums``,
`yt8m.checkpoint_checksum`), verified on load: a damaged file is an `ExportError`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from yt8m.atomic import atomic_output
from yt8m.checkpoint import Checkpoint, find_checkpoint, load_checkpoint
from yt8m.checkpoint_checksum import CHECKSUM_KEY, checksum_mismatch, payload_checksums
from yt8m.ema import prediction_state
from yt8m.errors import YT8MError
from yt8m.flags import Flags

FORMAT = "yt8m-export-1"
SUFFIX = ".safetensors"
log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ExportError(YT8MError):
    """An export that cannot be written or read."""


def export_bytes(checkpoint: Checkpoint, dtype: str, use_ema: bool = True) -> bytes:
    """The exported file's content: the prediction weights of `checkpoint` in `dtype`."""
    state = prediction_state(checkpoint, use_ema)
    cast = DTYPES[dtype]
    tensors = {
        name: (tensor.to(cast) if tensor.is_floating_point() else tensor).contiguous()
        for name, tensor in state.items()
    }
    metadata = {
        "format": FORMAT,
        "flags": json.dumps(checkpoint.flags.to_dict(), sort_keys=True),
        "step": str(checkpoint.step),
        "source": str(checkpoint.path),
        "dtype": dtype,
        "weights": "ema" if state is checkpoint.ema_state else "raw",
    }
    checked = {"model": tensors, "flags": metadata["flags"]}
    metadata[CHECKSUM_KEY] = json.dumps(payload_checksums(checked), sort_keys=True)
    return save(tensors, metadata)


def write_export(
    checkpoint: Checkpoint, output: str | Path, dtype: str, max_bytes: int = 0, use_ema: bool = True
) -> int:
    """Write the export of `checkpoint` atomically; returns its size in bytes.

    Raises `ExportError` (and writes nothing) when `max_bytes` > 0 and the file is larger.
    """
    content = export_bytes(checkpoint, dtype, use_ema)
    if max_bytes > 0 and len(content) > max_bytes:
        raise ExportError(
            f"{output}: the export of {checkpoint.path} in {dtype} is {len(content):,} bytes, "
            f"over --max_bytes={max_bytes:,}; nothing written (try --dtype=bfloat16 or float16)"
        )
    with atomic_output(output, binary=True) as out:
        out.write(content)
    return len(content)


def is_exported_model(path: str | Path) -> bool:
    """Whether `path` names an exported file (rather than a train_dir)."""
    return str(path).endswith(SUFFIX) and Path(path).is_file()


def _verify(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> None:
    """Raise `ExportError` when the tensors or the flag table do not match the checksums
    written with them; a file exported before the checksums loads with a warning."""
    if CHECKSUM_KEY not in metadata:
        log.warning("%s has no checksums (exported before they existed): not verified", path)
        return
    try:
        stored = json.loads(metadata[CHECKSUM_KEY])
    except ValueError:
        stored = None  # the table itself is damaged
    damaged = checksum_mismatch(
        {"model": tensors, "flags": metadata["flags"], CHECKSUM_KEY: stored}
    )
    if damaged or stored is None:
        raise ExportError(
            f"{path} is damaged: its {damaged or 'checksum table'} does not match the checksum "
            "written with it; export it again (yt8m export)"
        )


def load_exported_model(path: str | Path) -> Checkpoint:
    """An exported file as a `Checkpoint` (no optimizer or training state)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ExportError(f"{path} cannot be read as an exported model: {err}") from None
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{path} is not a file written by `yt8m export` ({FORMAT})")
    _verify(path, metadata, tensors)
    return Checkpoint(
        path=path,
        step=int(metadata["step"]),
        flags=Flags.from_dict(json.loads(metadata["flags"])),
        model_state=tensors,
        optimizer_state=None,
        training_state={},
    )


def _bool(text: str) -> bool:
    if text.lower() in ("true", "t", "1", "yes"):
        return True
    if text.lower() in ("false", "f", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, not {text!r}")


def main(argv: list[str]) -> int:
    """`yt8m export --train_dir=DIR --dtype=... --output=FILE [--max_bytes=N]`."""
    parser = argparse.ArgumentParser(
        prog="yt8m export",
        description="Write a checkpoint's weights and flags into one .safetensors file "
        "that eval and infer accept as --train_dir.",
    )
    parser.add_argument("--train_dir", required=True, help="train_dir (or averaged checkpoints)")
    parser.add_argument("--check_point", type=int, default=-1, help="step (-1: the latest)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--output", required=True, help=f"the file to write (*{SUFFIX})")
    parser.add_argument("--max_bytes", type=int, default=0, help="fail when larger (0: no limit)")
    parser.add_argument("--use_ema", type=_bool, default=True, help="the EMA weights if present")
    args = parser.parse_args(argv)
    if not args.output.endswith(SUFFIX):
        raise ExportError(f"--output={args.output}: the name must end in {SUFFIX}")
    checkpoint = load_checkpoint(find_checkpoint(args.train_dir, args.check_point))
    existed = Path(args.output).exists()
    size = write_export(checkpoint, args.output, args.dtype, args.max_bytes, args.use_ema)
    if existed:  # said once the new file is in place (a refused one replaces nothing)
        print(f"replaced the existing {args.output}", file=sys.stderr)
    print(f"{args.output}: {size} bytes ({args.dtype}, step {checkpoint.step} of {args.train_dir})")
    return 0
