"""``yt8m inspect PATTERN [flags]``: print what the reader sees in TFRecord files.

Files, record kind, id key, videos, labels per video, frames per video, feature shapes and
a few example videos, all read through the same code as training. Takes the data flags of
the shared table (``--feature_names``, ``--feature_sizes``, ``--num_classes``,
``--max_frames``, ``--frame_features``); without ``--frame_features`` the level is
detected from the first record. ``--limit N`` reads only the first N records.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from yt8m.data import wire
from yt8m.data.records import ID_KEYS, parse_frame_record, parse_video_record
from yt8m.data.tfrecord import RecordError, expand_pattern, read_records
from yt8m.flags import FlagError, parse_flags

EXAMPLES = 5


def _take_limit(argv: list[str]) -> tuple[list[str], int | None]:
    rest, limit, i = [], None, 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name == "--limit":
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            try:
                limit = int(value)
            except ValueError:
                raise FlagError(f"--limit={value!r}: expected an integer") from None
        else:
            rest.append(argv[i])
        i += 1
    return rest, limit


def _is_frame_level(payload: bytes) -> bool:
    _, lists = wire.split_sequence_example(payload)
    return bool(lists)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    pattern, (rest, limit) = argv[0], _take_limit(argv[1:])
    flags = parse_flags(rest, command="eval")
    files = expand_pattern(pattern)
    explicit = any(
        a.lstrip("-").split("=")[0] in ("frame_features", "noframe_features") for a in rest
    )
    records = ((path, i, p) for path in files for i, p in enumerate(read_records(path)))
    print(f"files: {len(files)} matching {pattern!r}")
    frame_counts, label_counts, classes, id_keys, examples = [], [], Counter(), Counter(), []
    features = None
    segments = 0
    for count, (path, index, payload) in enumerate(records):
        if limit is not None and count >= limit:
            break
        if features is None:
            if not explicit:
                flags.frame_features = _is_frame_level(payload)
            features = flags.feature_list()
        source = f"{path}, record {index}"
        if flags.frame_features:
            record = parse_frame_record(
                payload,
                features,
                max_frames=flags.max_frames,
                num_classes=flags.num_classes,
                source=source,
            )
            frame_counts.append(record.num_frames)
        else:
            record = parse_video_record(
                payload, features, num_classes=flags.num_classes, source=source
            )
        context = wire.decode_context(payload, ID_KEYS)
        id_keys.update(k for k in ID_KEYS if k in context)
        label_counts.append(len(record.labels))
        classes.update(record.labels.tolist())
        segments += record.segments is not None
        if len(examples) < EXAMPLES:
            examples.append(record)
    if features is None:
        raise RecordError(f"no records in the files matching {pattern!r}")
    _print_summary(
        flags, features, frame_counts, label_counts, classes, id_keys, segments, examples
    )
    return 0


def _stats(values: list[int]) -> str:
    array = np.asarray(values)
    return f"mean {array.mean():.2f}, min {array.min()}, max {array.max()}"


def _print_summary(
    flags, features, frame_counts, label_counts, classes, id_keys, segments, examples
) -> None:
    level = "frame-level (SequenceExample)" if flags.frame_features else "video-level (Example)"
    width = sum(size for _, size in features)
    print(f"records: {len(label_counts)} videos, {level}; id key: {', '.join(sorted(id_keys))}")
    print(
        f"labels per video: {_stats(label_counts)}; {len(classes)} of {flags.num_classes} "
        f"classes seen; most common: {', '.join(f'{c} ({n})' for c, n in classes.most_common(5))}"
    )
    parts = " + ".join(f"{name} {size}" for name, size in features)
    if flags.frame_features:
        print(f"frames per video (at most {flags.max_frames} kept): {_stats(frame_counts)}")
        print(f"features: {parts} -> uint8 frames [num_frames, {width}]")
    else:
        print(f"features: {parts} -> float32 [{width}]")
    print(f"segment ratings: {segments} videos" if segments else "segment ratings: none")
    print("examples:")
    for record in examples:
        shape = (
            f"frames {record.num_frames:3d}"
            if flags.frame_features
            else f"features {record.features.shape}"
        )
        print(f"  {record.video_id:<12} {shape}  labels {record.labels.tolist()}")
