"""Checksums of everything a checkpoint holds, so that a damaged file is never used.

`torch.load` does not verify the bytes of the tensors it reads (a flipped bit inside a
weight loads silently and predicts differently). A checkpoint therefore stores, beside its
content, one CRC32C per leaf: a tensor's raw bytes (dtype, shape and values), or the
``repr`` of a number, string, bool or None (the flag table's JSON, the optimizer's
settings). CRC32C is hardware-accelerated (the `crc32c` package, also used for TFRecords):
a 4 GB checkpoint costs well under a second to check.

Leaves are named by their path in the payload, e.g. ``model/classifier.expert_weights`` or
``optimizer/state/0/exp_avg``; any new entry of the payload (an EMA state, ...) is covered
without a change here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import crc32c
import torch

CHECKSUM_KEY = "checksums"  # the payload entry holding {leaf path: crc32c}


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}/{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}/{index}")
    else:
        yield path, value


def _crc(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        header = f"{value.dtype}{tuple(value.shape)}".encode()
        return crc32c.crc32c(data, crc32c.crc32c(header))
    return crc32c.crc32c(repr(value).encode())


def payload_checksums(payload: dict[str, Any]) -> dict[str, int]:
    """``{leaf path: crc32c}`` of every entry of `payload` but the checksums themselves."""
    return {
        path: _crc(value)
        for key, item in payload.items()
        if key != CHECKSUM_KEY
        for path, value in _leaves(item, str(key))
    }


def checksum_mismatch(payload: dict[str, Any]) -> str | None:
    """None when `payload` matches its stored checksums, else what differs, e.g.
    ``"tensor model/cluster_weights"``. A payload without checksums gives None."""
    stored = payload.get(CHECKSUM_KEY)
    if stored is None:
        return None
    if not isinstance(stored, dict):
        return "the checksum table"
    computed = payload_checksums(payload)
    for path in sorted(set(stored) | set(computed)):
        if path not in computed:
            return f"entry {path} (listed in the checksums, absent from the file)"
        if path not in stored:
            return f"entry {path} (absent from the checksums)"
        if stored[path] != computed[path]:
            return f"entry {path}"
    return None
