"""Write a file so that a crash never leaves a half-written file at its path."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """Yield a file object whose content appears at `path` only if the block succeeds.

    The data goes to a temporary file beside `path`, is flushed and fsynced, then
    renamed over `path` (an atomic step on POSIX). If the block raises, the
    temporary file is removed and `path` is untouched. A name ending in ``.gz`` is
    gzip-compressed. Text mode writes UTF-8 with ``\\n`` line ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    raw = open(tmp, "wb")  # noqa: SIM115 - closed below in every case
    try:
        stream: IO[bytes] = (
            gzip.GzipFile(filename=path.name, fileobj=raw, mode="wb", compresslevel=6)
            if path.suffix == ".gz"
            else raw
        )
        buffered = io.BufferedWriter(stream, 1 << 20) if stream is not raw else raw
        out = buffered if binary else io.TextIOWrapper(buffered, encoding="utf-8", newline="\n")
        yield out
        out.flush()
        if stream is not raw:
            stream.close()  # writes the gzip trailer into `raw`
        raw.flush()
        os.fsync(raw.fileno())
        raw.close()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        raw.close()
        tmp.unlink(missing_ok=True)
        raise
