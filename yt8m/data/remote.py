"""Data patterns on remote storage (``gs://``, ``s3://``, ``memory://``, ...), through fsspec.

fsspec comes with torch; each storage needs its own fsspec back end: Google Cloud Storage
needs gcsfs (``pip install 'yt8m[gcs]'``). A missing back end or an unknown protocol is a
one-line `RemoteDataError` naming the package to install. Remote paths are read only:
checkpoints, logs and submissions are written locally (`--train_dir` and `--output_file`
with a protocol are flag errors).
"""

from __future__ import annotations

from typing import Any, BinaryIO

from yt8m.data.tfrecord import RecordError

# protocol -> how to get its fsspec back end
_INSTALL = {
    "gs": "pip install 'yt8m[gcs]'",
    "gcs": "pip install 'yt8m[gcs]'",
}


class RemoteDataError(RecordError):
    """A remote path that cannot be reached: its back end is missing or its protocol unknown."""


def is_remote(path: str) -> bool:
    """Whether `path` names a file system by its protocol (``gs://...``)."""
    return "://" in path


def _protocol(path: str) -> str:
    return path.split("://", 1)[0]


def _filesystem(path: str) -> tuple[Any, list[str]]:
    """(fsspec file system, the paths `path` expands to on it)."""
    protocol = _protocol(path)
    try:
        import fsspec

        fs, _, found = fsspec.get_fs_token_paths(path)
    except ImportError as err:
        install = _INSTALL.get(protocol, f"install the fsspec back end of {protocol}:// ({err})")
        raise RemoteDataError(
            f"{path}: reading {protocol}:// needs a package that is not installed: {install}"
        ) from None
    except ValueError as err:  # fsspec: "Protocol not known"
        raise RemoteDataError(f"{path}: {err} (fsspec knows no such file system)") from None
    return fs, found


def glob_remote(pattern: str) -> list[str]:
    """The files matching a remote glob, with their protocol."""
    fs, found = _filesystem(pattern)
    return [fs.unstrip_protocol(p) for p in found if fs.isfile(p)]


def open_remote(path: str) -> BinaryIO:
    """A remote file opened for reading (raises OSError subclasses when absent)."""
    fs, _ = _filesystem(path)
    return fs.open(path, "rb")
