"""The ground truth of the segment metric: every rated (segment, class) pair of the
records of a pattern, with its score (successors.md §2; the starter's
segment_eval_inference.py ``read_labels``, without TensorFlow).

A pair rated in several records (a video listed twice) counts once; the same pair with
two different scores is an error naming the video. Segment ids are ``vid:start`` with
start in seconds, as the submission writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yt8m.data.records import iter_video_segments
from yt8m.segments.errors import SegmentError


@dataclass
class RatedPairs:
    """Rated pairs: pair i is video ``video_ids[video[i]]`` at ``start[i]`` seconds, class
    ``label[i]``, ``score[i]`` (positive when > 0). Pairs are unique."""

    video_ids: list[str]
    video: np.ndarray  # int64 [P]
    start: np.ndarray  # int64 [P]
    label: np.ndarray  # int64 [P]
    score: np.ndarray  # float32 [P]
    where: str  # the pattern they were read from

    def positives(self, num_classes: int) -> np.ndarray:
        """int64 ``[max(num_classes, largest class + 1)]``: each class's rated positives."""
        size = max(num_classes, int(self.label.max(initial=-1)) + 1)
        return np.bincount(self.label[self.score > 0], minlength=size).astype(np.int64)


def read_rated_pairs(pattern: str) -> RatedPairs:
    """The rated pairs of every record of `pattern` (only their context is decoded)."""
    index: dict[str, int] = {}
    video, start, label, score = [], [], [], []
    for where, video_id, segments in iter_video_segments(pattern):
        if (segments.labels < 0).any() or (segments.start_times < 0).any():
            raise SegmentError(f"{where}, video {video_id!r}: a negative segment label or start")
        number = index.setdefault(video_id, len(index))
        video.append(np.full(len(segments.labels), number, np.int64))
        start.append(segments.start_times)
        label.append(segments.labels)
        score.append(segments.scores)
    if not video:
        raise SegmentError(
            f"no rated segment in {pattern}: the ground truth is the 2019 segment-rated "
            "files (segment_labels, segment_start_times, segment_scores), e.g. validate*.tfrecord"
        )
    fields = [np.concatenate(parts) for parts in (video, start, label, score)]
    order = np.lexsort((fields[2], fields[1], fields[0]))
    video_, start_, label_, score_ = (f[order] for f in fields)
    same = (video_[1:] == video_[:-1]) & (start_[1:] == start_[:-1]) & (label_[1:] == label_[:-1])
    conflict = same & (score_[1:] != score_[:-1])
    if conflict.any():
        i = int(np.flatnonzero(conflict)[0]) + 1
        name = next(v for v, n in index.items() if n == video_[i])
        raise SegmentError(
            f"{pattern}: video {name!r}, segment {start_[i]} s, class {label_[i]} is rated "
            f"twice with different scores ({score_[i - 1]} and {score_[i]})"
        )
    keep = np.concatenate([[True], ~same])
    return RatedPairs(
        list(index), video_[keep], start_[keep], label_[keep], score_[keep], where=pattern
    )
