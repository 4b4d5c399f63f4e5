"""The class whitelist of the 2019 segment task (successors.md §1): the starter's
``segment_label_ids.csv``, a header line ``Index`` then one class index a line (1,000 of
the 3,862 classes). Given with ``--segment_label_ids_file`` (``--segment_label_ids`` works
too: an unambiguous prefix).

The starter skipped every line that was not an integer; here a file that is not such a
list is an error naming the line: a missing file, a first line other than ``Index``, a
line that is not a class index, a class outside ``0..num_classes-1``, a class listed twice,
no class at all. Blank lines are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yt8m.segments.errors import SegmentError

HEADER = "Index"
FLAG = "--segment_label_ids_file"


def read_segment_label_ids(path: str, num_classes: int) -> np.ndarray:
    """The whitelisted classes of `path`: int64 ``[W]``, increasing, each in
    ``0..num_classes-1``. Raises `SegmentError` naming the file and line."""
    if not path:
        raise SegmentError(
            f"{FLAG} is empty: give the class whitelist, the starter's segment_label_ids.csv "
            f"(a header '{HEADER}', then one class index a line)"
        )
    if path.startswith(("http://", "https://", "gs://")):
        raise SegmentError(f"{FLAG}={path}: a remote file; download it and give its local path")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SegmentError(f"{FLAG}={path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SegmentError(f"{FLAG}={path} cannot be read: {err}") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        first = repr(lines[0][:40]) if lines else "an empty file"
        raise SegmentError(
            f"{path}, line 1: the header must be '{HEADER}' (the starter's "
            f"segment_label_ids.csv), found {first}"
        )
    first_line: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        value = line.strip()
        if not value:
            continue
        try:
            index = int(value)
        except ValueError:
            raise SegmentError(
                f"{path}, line {number}: {value[:40]!r} is not a class index"
            ) from None
        if not 0 <= index < num_classes:
            raise SegmentError(
                f"{path}, line {number}: class {index} is outside 0..{num_classes - 1} "
                f"(--num_classes={num_classes}; 3862 for the 2018/2019 vocabulary)"
            )
        if index in first_line:
            raise SegmentError(
                f"{path}, line {number}: class {index} is listed twice "
                f"(lines {first_line[index]} and {number})"
            )
        first_line[index] = number
    if not first_line:
        raise SegmentError(f"{path} lists no class after its header '{HEADER}'")
    return np.array(sorted(first_line), dtype=np.int64)


def write_segment_label_ids(path: str | Path, classes: np.ndarray) -> None:
    """Write `classes` as a whitelist file (the synthetic data's, tests)."""
    body = "".join(f"{int(c)}\n" for c in classes)
    Path(path).write_text(f"{HEADER}\n{body}", encoding="utf-8")
