"""One selection out of the processes of a torchrun job (segment inference and evaluation).

Every rank saves its `Selection` (`yt8m.segments.selection`) and its id count into a
hidden directory that rank 0 creates beside the output (visible to every rank, as for
`yt8m infer`), and frees it; rank 0 memory-maps the parts and merges them, rank r's ids
shifted by the ids of the ranks before it, so that equal scores rank the lower rank's
segments first. The directory is removed afterwards.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch.distributed as dist

from yt8m.distributed import Process
from yt8m.segments.selection import Selection, TopKPerClass, merge


def merged_over_ranks(
    top: TopKPerClass, ids: int, extra: object, process: Process, directory: Path
) -> tuple[Selection, list[int], list[object]] | None:
    """On rank 0: the merged selection, each rank's id offset and each rank's `extra`
    (JSON-able: e.g. its video ids); on the other ranks None. `ids`: this rank's id count
    (its ids lie in ``0..ids-1``). A single process returns its own selection."""
    if not process.distributed:
        return top.result(), [0], [extra]
    place = [None]
    if process.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        place[0] = tempfile.mkdtemp(prefix=".segments-parts-", dir=directory)
    dist.broadcast_object_list(place, src=0)
    parts = Path(place[0])
    try:
        selection = top.result()
        width = int(selection.counts.max(initial=0))
        np.save(parts / f"keys-{process.rank}.npy", selection.keys[:, :width])
        np.save(parts / f"counts-{process.rank}.npy", selection.counts)
        (parts / f"extra-{process.rank}.json").write_text(json.dumps({"ids": ids, "extra": extra}))
        del selection
        top.keys = np.empty((0, 0), np.int64)  # free the buffers before rank 0 merges
        dist.barrier()
        if not process.is_main:
            return None
        selections, offsets, extras, first = [], [], [], 0
        for rank in range(process.world_size):
            keys = np.load(parts / f"keys-{rank}.npy", mmap_mode="r")
            selections.append(Selection(keys, np.load(parts / f"counts-{rank}.npy")))
            info = json.loads((parts / f"extra-{rank}.json").read_text())
            offsets.append(first)
            extras.append(info["extra"])
            first += info["ids"]
        return merge(selections, offsets, top.k), offsets, extras
    finally:
        if process.is_main:
            shutil.rmtree(parts, ignore_errors=True)
