"""TFRecord framing: read and write records, verify both masked CRC32C fields.

One record on disk (fidelity.md §1)::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) |
    payload (length bytes)        | uint32 masked_crc32c(payload)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32)`` and crc32c the
Castagnoli CRC (the hardware-accelerated ``crc32c`` package). A file is either such a stream
or the same stream GZIP-compressed (recognised by its magic bytes ``1f 8b``, whatever its
name). Plain local files are memory-mapped (`read_record_views` hands out zero-copy views);
paths with a scheme (``gs://``, ``memory://``, ...) are opened through fsspec
(`yt8m.data.remote`: a missing back end such as gcsfs is an error naming what to install).

Every defect is a `CorruptRecordError` naming the file and the byte offset of the record (in
the uncompressed stream for GZIP files). With ``skip_corrupt=True`` a record whose payload CRC
is wrong is skipped and counted; after a bad length field (wrong length CRC, truncation) the
record boundaries can no longer be trusted, so the rest of that file is skipped and counted
as such. The counts live in a `ReadStats`, whose `report` says what was lost.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import io
import mmap
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO

import crc32c

from yt8m.atomic import atomic_output
from yt8m.errors import YT8MError

Payload = bytes | memoryview
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_GZIP_MAGIC = b"\x1f\x8b"
_READ_BUFFER = 1 << 20
_READ_CHUNK = 1 << 24


class RecordError(YT8MError):
    """A TFRecord file or record that cannot be read; the message names file and place."""


class CorruptRecordError(RecordError):
    """Damaged framing: a truncated record, a bad length CRC or a bad payload CRC."""


def masked_crc32c(data: bytes | memoryview) -> int:
    """The TFRecord checksum of `data`: CRC32C, rotated right by 15 bits, plus a constant."""
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


@dataclass
class ReadStats:
    """What `read_records` had to skip with ``skip_corrupt=True``.

    ``skipped_records[path]``: records dropped for a bad payload CRC;
    ``skipped_tails[path]``: ``(offset, bytes)`` of a file's unreadable remainder.
    """

    skipped_records: dict[str, int] = field(default_factory=dict)
    skipped_tails: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.skipped_records or self.skipped_tails)

    def report(self, stream: IO[str] | None = None) -> None:
        """Write one warning line per damaged file (nothing when nothing was skipped)."""
        stream = stream or sys.stderr
        for path in sorted(set(self.skipped_records) | set(self.skipped_tails)):
            parts = []
            if path in self.skipped_records:
                parts.append(f"{self.skipped_records[path]} corrupt record(s) skipped")
            if path in self.skipped_tails:
                offset, size = self.skipped_tails[path]
                parts.append(f"the rest of the file from byte {offset} ({size} bytes) skipped")
            print(f"warning: {path}: {'; '.join(parts)}", file=stream)


def _is_remote(path: str) -> bool:
    return "://" in path


def _open_raw(path: str) -> BinaryIO:
    if _is_remote(path):
        from yt8m.data.remote import open_remote

        return open_remote(path)
    return open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - caller closes


class _MappedFile:
    """A plain local file, memory-mapped: `read` returns zero-copy views of the page cache.

    The mapping is released when the last view of it is gone (never closed under a view).
    """

    def __init__(self, raw: BinaryIO) -> None:
        size = os.fstat(raw.fileno()).st_size
        # MAP_POPULATE maps the (cached) pages at once instead of one page fault each
        populate = getattr(mmap, "MAP_POPULATE", 0)
        mapped = (
            mmap.mmap(raw.fileno(), 0, flags=mmap.MAP_SHARED | populate, prot=mmap.PROT_READ)
            if size
            else b""
        )
        self._view: memoryview | None = memoryview(mapped)
        self._pos = 0

    def read(self, size: int) -> memoryview:
        view = self._view[self._pos : self._pos + size]
        self._pos += len(view)
        return view

    def seek(self, pos: int) -> int:
        self._pos = pos
        return pos

    def close(self) -> None:
        self._view = None


def _open_stream(path: str) -> BinaryIO | _MappedFile:
    """Open `path` for reading: GZIP (by magic bytes) decompressed, a plain local file
    memory-mapped, a remote one streamed."""
    try:
        raw = _open_raw(path)
    except OSError as err:
        raise RecordError(f"{path}: cannot open: {err.strerror or err}") from None
    try:
        magic = raw.read(2)
        raw.seek(0)
        if magic == _GZIP_MAGIC:
            return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _READ_BUFFER)  # type: ignore[arg-type]
        if _is_remote(path):
            return raw
    except OSError as err:
        raw.close()
        raise RecordError(f"{path}: cannot read: {err}") from None
    try:
        with raw:
            return _MappedFile(raw)
    except (OSError, ValueError):  # a file system without mmap: stream it
        return _open_raw(path)


def _read(stream: BinaryIO | _MappedFile, size: int, path: str, offset: int) -> Payload:
    """Read `size` bytes (fewer only at the end of the file), never allocating more than the
    file holds; a damaged GZIP stream is a `CorruptRecordError`."""
    try:
        if size <= _READ_CHUNK or isinstance(stream, _MappedFile):
            return stream.read(size)
        chunks = []
        while size > 0:
            chunk = stream.read(min(size, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptRecordError(
            f"{path}: damaged GZIP stream in the record at (uncompressed) byte {offset}: {err}"
        ) from None


def _remaining_bytes(stream: BinaryIO | _MappedFile) -> int:
    """Read to the end of `stream`, returning how many bytes were left (damage ends it)."""
    total = 0
    with contextlib.suppress(OSError, EOFError, zlib.error):
        while chunk := stream.read(_READ_CHUNK):
            total += len(chunk)
    return total


def read_records(
    path: str, skip_corrupt: bool = False, stats: ReadStats | None = None
) -> Iterator[bytes]:
    """Yield the payload of every record of one TFRecord file (plain or GZIP), in order.

    Both CRCs are verified. Raises `CorruptRecordError` (file + byte offset) on damage, or,
    with `skip_corrupt`, counts what it skips in `stats`; without a `stats` of the caller's,
    the counts are reported to stderr when the file is done.
    """
    for payload in read_record_views(path, skip_corrupt, stats):
        yield bytes(payload)


def read_record_views(
    path: str, skip_corrupt: bool = False, stats: ReadStats | None = None
) -> Iterator[Payload]:
    """`read_records` without copies: payloads of plain local files are read-only
    memoryviews of the memory-mapped file (the decoders take either)."""
    own_stats = stats is None and skip_corrupt
    stats = ReadStats() if stats is None else stats
    stream = _open_stream(path)
    offset = 0
    try:
        while True:
            header = _read(stream, 12, path, offset)
            if not header:
                return
            payload = crc = b""
            if len(header) < 12:
                problem = f"truncated record header at byte {offset}"
            elif masked_crc32c(header[:8]) != _CRC.unpack_from(header, 8)[0]:
                problem = f"bad length CRC in the record at byte {offset}"
            else:
                length = _HEADER.unpack(header)[0]
                payload = _read(stream, length, path, offset)
                crc = _read(stream, 4, path, offset) if len(payload) == length else b""
                problem = (
                    ""
                    if len(crc) == 4
                    else f"truncated record at byte {offset}: it declares {length} payload "
                    f"bytes, the file ends {len(payload) + len(crc)} bytes later"
                )
            if problem:
                if not skip_corrupt:
                    raise CorruptRecordError(f"{path}: {problem}")
                lost = len(header) + len(payload) + len(crc) + _remaining_bytes(stream)
                stats.skipped_tails[path] = (offset, lost)
                return
            if masked_crc32c(payload) == _CRC.unpack(crc)[0]:
                yield payload
            elif skip_corrupt:
                stats.skipped_records[path] = stats.skipped_records.get(path, 0) + 1
            else:
                raise CorruptRecordError(f"{path}: bad payload CRC in the record at byte {offset}")
            offset += 16 + length
    finally:
        stream.close()
        if own_stats and stats:
            stats.report()


def has_records(path: str) -> bool:
    """Whether the (uncompressed) stream of `path` holds any byte: False for an empty file
    or an empty GZIP stream. A damaged file counts as holding data (reading it says more)."""
    stream = _open_stream(path)
    try:
        return len(stream.read(1)) > 0
    except (OSError, EOFError, zlib.error):
        return True
    finally:
        stream.close()


def count_records(path: str) -> int:
    """Number of records in one file, reading only the length fields (and their CRCs).

    Used to plan where a resumed training run starts; payload CRCs are not checked here.
    """
    stream = _open_stream(path)
    count = offset = 0
    try:
        while header := _read(stream, 12, path, offset):
            if len(header) < 12 or masked_crc32c(header[:8]) != _CRC.unpack_from(header, 8)[0]:
                raise CorruptRecordError(f"{path}: bad record header at byte {offset}")
            length = _HEADER.unpack(header)[0]
            stream.seek(offset + 12 + length + 3)
            if len(_read(stream, 1, path, offset)) != 1:
                raise CorruptRecordError(f"{path}: truncated record at byte {offset}")
            count += 1
            offset += 16 + length
    finally:
        stream.close()
    return count


class TFRecordWriter:
    """Write records to a TFRecord file, atomically (the file appears when the block ends).

    GZIP-compressed when the name ends in ``.gz`` or ``compression="GZIP"``::

        with TFRecordWriter("train0000.tfrecord") as writer:
            writer.write(payload)
    """

    def __init__(self, path: str | os.PathLike, compression: str | None = None) -> None:
        if compression not in (None, "", "GZIP", "gzip"):
            raise RecordError(f"{path}: unknown compression {compression!r} (use GZIP or none)")
        self.path = os.fspath(path)
        self._gzip_by_option = bool(compression) and not self.path.endswith(".gz")
        self._stack = contextlib.ExitStack()
        self._out: IO[bytes] | None = None

    def __enter__(self) -> TFRecordWriter:
        out = self._stack.enter_context(atomic_output(self.path, binary=True))
        if self._gzip_by_option:
            out = self._stack.enter_context(gzip.GzipFile(fileobj=out, mode="wb"))
        self._out = out
        return self

    def __exit__(self, *exc_info: object) -> bool:
        self._out = None
        return self._stack.__exit__(*exc_info)

    def write(self, payload: bytes) -> None:
        """Append one record holding `payload`."""
        if self._out is None:
            raise RecordError(f"{self.path}: write() outside the writer's `with` block")
        length = struct.pack("<Q", len(payload))
        self._out.write(length + _CRC.pack(masked_crc32c(length)))
        self._out.write(payload)
        self._out.write(_CRC.pack(masked_crc32c(payload)))


def expand_pattern(pattern: str) -> list[str]:
    """The sorted files matching `pattern`: a comma-separated list of globs or paths.

    Remote globs (``gs://...``) go through fsspec. No match is an error naming the pattern.
    """
    paths: set[str] = set()
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        if _is_remote(part):
            from yt8m.data.remote import glob_remote

            paths.update(glob_remote(part))
        else:
            expanded = os.path.expanduser(part)
            paths.update(p for p in glob.glob(expanded) if os.path.isfile(p))
    if not paths:
        raise RecordError(f"no files match the data pattern {pattern!r}")
    return sorted(paths)
