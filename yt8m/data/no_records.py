"""Reading no record at all is an error: a pattern whose files are all empty.

`train`, `eval` and `infer` call `require_records` before any work, so nothing is written
(an untrained checkpoint, a header-only submission); it opens files in order until one
holds data, which costs one small read for real data. `no_records_error` is raised where
nothing arrived after all (every record skipped as corrupt, an empty share of a rank).
"""

from __future__ import annotations

import os

from yt8m.data.tfrecord import RecordError, expand_pattern, has_records

_LISTED = 5  # files named in the message


class NoRecordsError(RecordError):
    """A data pattern whose files hold no record; names the pattern and the files."""


def _describe(path: str) -> str:
    try:
        return f"{path} ({os.path.getsize(path)} bytes)"
    except OSError:
        return path


def no_records_error(flag: str, pattern: str, what: str = "no record") -> NoRecordsError:
    """The error for `--flag=pattern` that gave nothing; lists its first files."""
    files = expand_pattern(pattern)
    listed = ", ".join(_describe(f) for f in files[:_LISTED])
    if len(files) > _LISTED:
        listed += f", ... ({len(files)} files)"
    return NoRecordsError(
        f"{what} was read from {flag}={pattern!r}; its files: {listed}. Give a pattern of "
        "TFRecord files that hold videos (`yt8m inspect PATTERN` shows what they hold)"
    )


def require_records(flag: str, pattern: str) -> list[str]:
    """The files of `pattern` (`expand_pattern`); a `NoRecordsError` when none holds data."""
    files = expand_pattern(pattern)
    if not any(has_records(path) for path in files):
        raise no_records_error(flag, pattern)
    return files
