"""Flags of linrongc/youtube-8m's scripts that have no job of their own here.

Its ``scripts/*.sh`` (successors.md §3) run as written (`tests/test_linrongc_scripts.py`):

* ``--num_gpu=N`` made its train.py build N towers on one process's GPUs. Here one
  process drives one device and several devices take several processes (``torchrun
  --nproc_per_node=N``), so the flag has no effect; training says so once (rank 0).
* ``--output_model_tgz=FILE`` made its inference.py bundle the model it predicted with
  into a ``.tgz``; here the archive holds the checkpoint file used, so that extracting
  it gives a directory `yt8m eval`/`yt8m infer` take as ``--train_dir``.
"""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

from yt8m.atomic import atomic_output
from yt8m.distributed import Process
from yt8m.flags import Flags

log = logging.getLogger("yt8m.train")


def note_num_gpu(flags: Flags, process: Process) -> None:
    """Warn once (rank 0) that ``--num_gpu`` other than 1 has no effect."""
    if flags.num_gpu == 1 or not process.is_main:
        return
    if process.distributed:
        where = f"under torchrun its {process.world_size} processes drive one device each"
    else:
        where = (
            f"this process drives one device ({process.device}); for N GPUs start N "
            "processes: torchrun --nproc_per_node=N -m yt8m train ..."
        )
    log.warning("--num_gpu=%d has no effect: %s", flags.num_gpu, where)


def write_model_tgz(output: str | Path, checkpoint_file: str | Path) -> Path:
    """A gzip tar holding `checkpoint_file` under its own name (atomically written)."""
    output, source = Path(output), Path(checkpoint_file)
    with atomic_output(output, binary=True) as out:
        with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:  # weights: noise
            tar.add(source, arcname=source.name)
    log.info("bundled %s into %s", source, output)
    return output
