"""One YouTube-8M record <-> one video (fidelity.md §1, §2.2-3).

Frame-level records (SequenceExample) become `FrameRecord` ``(video_id, labels, frames uint8
[n, sum(sizes)], num_frames, segments)``: the feature lists of ``--feature_names`` are
concatenated per frame in flag order and frames beyond ``max_frames`` are dropped
(``num_frames = min(n, max_frames)``). Video-level records (Example) become `VideoRecord`
``(video_id, labels, features float32 [sum(sizes)], segments)``.

The id is under ``video_id`` (2017 files) or ``id`` (2018 and later); either is accepted.
A test split without ``labels`` gives an empty label array. The 2019 segment fields
(``segment_labels``, ``segment_start_times``, ``segment_scores``) are read when present.
Every defect is a `RecordError` naming the file, the record and (when known) the video.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from yt8m.data import wire
from yt8m.data.regular_records import read_regular_frame_record
from yt8m.data.tfrecord import Payload, RecordError, expand_pattern, read_record_views

ID_KEYS = ("video_id", "id")
SEGMENT_KEYS = ("segment_labels", "segment_start_times", "segment_scores")
FeatureSpec = Sequence[tuple[str, int]]


class Segments(NamedTuple):
    """The 2019 segment ratings of one video (all of length S)."""

    labels: np.ndarray  # int64 [S]
    start_times: np.ndarray  # int64 [S], seconds
    scores: np.ndarray  # float32 [S]


@dataclass
class BatchSegments:
    """The segment ratings of several videos (a batch), concatenated: video ``b`` has the
    entries ``offsets[b]:offsets[b + 1]`` (none without segment fields). A plain object, so
    that a DataLoader hands it over as it is (one pickle, no tensor per array)."""

    offsets: np.ndarray  # int64 [B + 1]
    labels: np.ndarray  # int64 [N]
    start_times: np.ndarray  # int64 [N]
    scores: np.ndarray  # float32 [N]

    @classmethod
    def of(cls, videos: Sequence[Segments | None]) -> BatchSegments:
        parts = [s for s in videos if s is not None]
        offsets = np.zeros(len(videos) + 1, np.int64)
        offsets[1:] = np.cumsum([0 if s is None else len(s.labels) for s in videos])
        fields = [
            np.concatenate([getattr(s, name) for s in parts]).astype(dtype)
            if parts
            else np.zeros(0, dtype)
            for name, dtype in (
                ("labels", np.int64),
                ("start_times", np.int64),
                ("scores", np.float32),
            )
        ]
        return cls(offsets, *fields)

    def video(self, b: int) -> Segments:
        """The ratings of video `b` (views)."""
        part = slice(self.offsets[b], self.offsets[b + 1])
        return Segments(self.labels[part], self.start_times[part], self.scores[part])


class FrameRecord(NamedTuple):
    video_id: str
    labels: np.ndarray  # int64 [L]
    frames: np.ndarray  # uint8 [num_frames, sum(sizes)]
    num_frames: int
    segments: Segments | None = None


class VideoRecord(NamedTuple):
    video_id: str
    labels: np.ndarray  # int64 [L]
    features: np.ndarray  # float32 [sum(sizes)]
    segments: Segments | None = None


def find_video_id(context: Mapping[str, wire.Feature], where: str) -> tuple[str, str]:
    """``(id key, video id)`` of a record's context; an error lists the keys present."""
    key = next((k for k in ID_KEYS if k in context), None)
    if key is None:
        present = ", ".join(sorted(context)) or "none"
        raise RecordError(f"{where}: no video id: neither 'video_id' nor 'id' (keys: {present})")
    value = context[key]
    if not isinstance(value, list) or len(value) != 1:
        raise RecordError(f"{where}: '{key}' must be one bytes value, got {_describe(value)}")
    return key, value[0].decode("utf-8", errors="backslashreplace")


def _describe(feature: wire.Feature) -> str:
    if isinstance(feature, list):
        return f"{len(feature)} bytes value(s)"
    return f"{feature.size} {'float' if feature.dtype.kind == 'f' else 'int64'} value(s)"


def _int64s(context: Mapping[str, wire.Feature], key: str, where: str) -> np.ndarray:
    value = context.get(key, [])
    if isinstance(value, list):
        if value:
            raise RecordError(f"{where}: '{key}' must be int64 values, got {_describe(value)}")
        return np.zeros(0, np.int64)
    if value.dtype != np.int64:
        raise RecordError(f"{where}: '{key}' must be int64 values, got {_describe(value)}")
    return value


def _labels(context: Mapping[str, wire.Feature], num_classes: int, where: str) -> np.ndarray:
    labels = _int64s(context, "labels", where)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise RecordError(
            f"{where}: label {int(bad[0])} is outside 0..{num_classes - 1} "
            f"(--num_classes={num_classes}; 4716 for 2017 data, 3862 for 2018, 1000 for 2019)"
        )
    return labels


def _segments(context: Mapping[str, wire.Feature], where: str) -> Segments | None:
    if "segment_labels" not in context:
        return None
    labels = _int64s(context, "segment_labels", where)
    start_times = _int64s(context, "segment_start_times", where)
    scores = context.get("segment_scores", [])
    if isinstance(scores, list) and not scores:
        scores = np.zeros(0, np.float32)
    if isinstance(scores, list) or scores.dtype != np.float32:
        raise RecordError(
            f"{where}: 'segment_scores' must be float values, got {_describe(scores)}"
        )
    if not len(labels) == len(start_times) == len(scores):
        raise RecordError(
            f"{where}: the segment fields differ in length: segment_labels has {len(labels)} "
            f"values, segment_start_times {len(start_times)}, segment_scores {len(scores)}; "
            "each rated segment needs one of each"
        )
    # copies: the decoded values may be views of the record's bytes
    return Segments(labels.copy(), start_times.copy(), scores.copy())


def _frames_from_features(
    features: list[wire.Feature], name: str, size: int, where: str
) -> np.ndarray:
    """General path: one bytes value of `size` bytes per Feature -> uint8 ``[n, size]``."""
    frames = np.empty((len(features), size), np.uint8)
    for i, feature in enumerate(features):
        if not isinstance(feature, list) or len(feature) != 1 or len(feature[0]) != size:
            got = (
                f"{len(feature[0])} bytes"
                if isinstance(feature, list) and len(feature) == 1
                else _describe(feature)
            )
            raise RecordError(f"{where}: frame {i} of '{name}' has {got}, expected {size} bytes")
        frames[i] = np.frombuffer(feature[0], np.uint8)
    return frames


def parse_frame_record(
    payload: Payload,
    features: FeatureSpec,
    *,
    max_frames: int = 300,
    num_classes: int = 4716,
    source: str = "record",
    out: np.ndarray | None = None,
) -> FrameRecord:
    """Decode one SequenceExample. `source` names the file and record in errors.

    With `out` (uint8 ``[>= max_frames, sum(sizes)]``, e.g. a row of a batch) the frames are
    written into ``out[:num_frames]`` and `frames` is that view; rows after it are untouched.
    Records of the regular YouTube-8M layout take the compiled fast path
    (`yt8m.data.regular_records`), any other record `parse_frame_record_general`.
    """
    target = out if out is not None else np.empty((max_frames, _width(features)), np.uint8)
    fast = read_regular_frame_record(
        np.frombuffer(payload, np.uint8), tuple(features), max_frames, num_classes, target
    )
    if fast is None:
        return parse_frame_record_general(
            payload,
            features,
            max_frames=max_frames,
            num_classes=num_classes,
            source=source,
            out=out,
        )
    video_id = bytes(payload[fast.id_start : fast.id_end]).decode("utf-8", "backslashreplace")
    segments = None
    if fast.has_segments:
        context = wire.decode_context(payload, SEGMENT_KEYS)
        segments = _segments(context, f"{source}, video {video_id!r}")
    frames = target[: fast.num_frames]
    if out is None:
        frames = frames.copy()  # not a view of max_frames rows
    return FrameRecord(video_id, fast.labels, frames, fast.num_frames, segments)


def _width(features: FeatureSpec) -> int:
    return sum(size for _, size in features)


def parse_frame_record_general(
    payload: Payload,
    features: FeatureSpec,
    *,
    max_frames: int = 300,
    num_classes: int = 4716,
    source: str = "record",
    out: np.ndarray | None = None,
) -> FrameRecord:
    """`parse_frame_record` by the general decoder: any valid encoding, and an error that
    names every defect (file, record, video)."""
    try:
        context, lists = wire.split_sequence_example(payload)
    except RecordError as err:
        raise RecordError(f"{source}: not a valid SequenceExample: {err}") from None
    _, video_id = find_video_id(context, source)
    where = f"{source}, video {video_id!r}"
    labels = _labels(context, num_classes, where)
    parts = []
    for name, size in features:
        if name not in lists:
            hint = " (is it video-level data? then leave out --frame_features)" if not lists else ""
            raise RecordError(
                f"{where}: no feature list '{name}'; it has: {', '.join(sorted(lists)) or 'none'}{hint}"
            )
        frames = wire.fixed_bytes_frames(lists[name])
        if frames is None or frames.shape[1] != size:
            try:
                decoded = wire.decode_feature_list(lists[name])
            except RecordError as err:
                raise RecordError(f"{where}: feature list '{name}': {err}") from None
            frames = _frames_from_features(decoded, name, size, where)
        if parts and len(frames) != len(parts[0]):
            raise RecordError(
                f"{where}: '{name}' has {len(frames)} frames but '{features[0][0]}' has "
                f"{len(parts[0])}"
            )
        parts.append(frames)
    num_frames = min(len(parts[0]), max_frames) if parts else 0
    target = np.empty((num_frames, _width(features)), np.uint8) if out is None else out[:num_frames]
    column = 0
    for frames, (_, size) in zip(parts, features, strict=True):
        target[:, column : column + size] = frames[:num_frames]
        column += size
    return FrameRecord(video_id, labels, target, num_frames, _segments(context, where))


def parse_video_record(
    payload: Payload, features: FeatureSpec, *, num_classes: int = 4716, source: str = "record"
) -> VideoRecord:
    """Decode one Example: the named float features concatenated in flag order."""
    try:
        context = wire.decode_example(payload)
    except RecordError as err:
        raise RecordError(f"{source}: not a valid Example: {err}") from None
    _, video_id = find_video_id(context, source)
    where = f"{source}, video {video_id!r}"
    labels = _labels(context, num_classes, where)
    values = []
    for name, size in features:
        value = context.get(name)
        if value is None:
            raise RecordError(
                f"{where}: no feature '{name}'; it has: {', '.join(sorted(context))} "
                "(frame-level data needs --frame_features)"
            )
        if isinstance(value, list) or value.dtype != np.float32 or value.size != size:
            raise RecordError(
                f"{where}: '{name}' has {_describe(value)}, expected {size} float values"
            )
        values.append(value)
    joined = np.concatenate(values) if values else np.zeros(0, np.float32)
    return VideoRecord(video_id, labels, joined, _segments(context, where))


def _iter_contexts(pattern: str, keys: tuple[str, ...]) -> Iterator[tuple[str, str, dict]]:
    """``(where, video_id, context)`` of every record matching `pattern`, in file order: the
    context features named by `keys` decoded, no feature list (`where` names the file and
    record)."""
    for path in expand_pattern(pattern):
        for index, payload in enumerate(read_record_views(path)):
            source = f"{path}, record {index}"
            try:
                context = wire.decode_context(payload, keys)
            except RecordError as err:
                raise RecordError(f"{source}: not a valid record: {err}") from None
            _, video_id = find_video_id(context, source)
            yield source, video_id, context


def iter_video_labels(pattern: str, num_classes: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(video_id, labels int64 [L])`` of every record matching `pattern`, frame-level or
    video-level, in file order, without decoding any features."""
    for source, video_id, context in _iter_contexts(pattern, (*ID_KEYS, "labels")):
        yield video_id, _labels(context, num_classes, f"{source}, video {video_id!r}")


def iter_video_segments(pattern: str) -> Iterator[tuple[str, str, Segments]]:
    """``(where, video_id, Segments)`` of every record matching `pattern` that has the 2019
    segment fields, in file order, without decoding any features (`where` names the file
    and record)."""
    for source, video_id, context in _iter_contexts(pattern, (*ID_KEYS, *SEGMENT_KEYS)):
        segments = _segments(context, f"{source}, video {video_id!r}")
        if segments is not None:
            yield source, video_id, segments


# ---- encoding (synthetic data, tests) --------------------------------------------------


def _context(
    video_id: str, labels: Sequence[int] | np.ndarray | None, id_key: str
) -> dict[str, wire.Feature]:
    if id_key not in ID_KEYS:
        raise ValueError(f"id_key must be one of {ID_KEYS}, not {id_key!r}")
    context: dict[str, wire.Feature] = {id_key: [video_id.encode()]}
    if labels is not None:
        context["labels"] = np.asarray(labels, dtype=np.int64)
    return context


def encode_frame_record(
    video_id: str,
    labels: Sequence[int] | np.ndarray | None,
    frames: Mapping[str, np.ndarray],
    *,
    id_key: str = "video_id",
    segments: Segments | None = None,
) -> bytes:
    """A frame-level SequenceExample: `frames` maps feature name -> uint8 ``[n, size]``.

    ``labels=None`` writes no labels (a test split)."""
    context = _context(video_id, labels, id_key)
    if segments is not None:
        context.update(zip(SEGMENT_KEYS, segments, strict=True))
    return wire.encode_sequence_example(context, frames)


def encode_video_record(
    video_id: str,
    labels: Sequence[int] | np.ndarray | None,
    features: Mapping[str, np.ndarray],
    *,
    id_key: str = "video_id",
) -> bytes:
    """A video-level Example: `features` maps name -> float32 ``[size]``."""
    context = _context(video_id, labels, id_key)
    context.update({name: np.asarray(v, np.float32) for name, v in features.items()})
    return wire.encode_example(context)
