"""`yt8m score-segments`: MAP@K of a ``Class,Segments`` submission against the rated
segments of TFRecords (successors.md §2; the starter's segment_eval_inference.py).

    yt8m score-segments --submission_file=segments.csv.gz \\
        --eval_data_pattern='validate*.tfrecord' [--top_n=100000] \\
        [--segment_label_ids_file=segment_label_ids.csv] [--num_classes=3862]

Prints MAP@K, the classes counted, and the rated pairs (and positives) the capped lists
found. Errors (exit 2, naming the file and line): a header other than ``Class,Segments``,
a class that is not an integer, not in the whitelist (when given) or outside
``0..num_classes-1``, a class twice, an entry that is not ``vid:start``, an entry twice
in one line. Counted warnings (the metric reads these as the Kaggle scorer's string match
does): entries past ``--top_n`` (not scored), entries off the segment grid (never rated),
whitelisted classes with rated positives that the submission lacks (not in the mean).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from yt8m.data.tfrecord import expand_pattern
from yt8m.segments.errors import SegmentError
from yt8m.segments.ground_truth import RatedPairs, read_rated_pairs
from yt8m.segments.map_at_k import MapResult, mean_average_precision, score_codes
from yt8m.segments.matching import RatedIndex
from yt8m.segments.submission import iter_submission_lines
from yt8m.segments.whitelist import read_segment_label_ids

log = logging.getLogger("yt8m.score_segments")

KAGGLE_TOP_N = 100_000
MATCH_THREADS = 2


@dataclass
class SubmissionScore:
    """MAP@K of a submission, what it was computed on, and the counted warnings."""

    result: MapResult
    top_n: int
    entries: int
    warnings: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        return {
            **self.result.as_dict(self.top_n),
            "submission_entries": self.entries,
            **self.warnings,
        }


def score_submission(
    path: str,
    truth: RatedPairs,
    *,
    top_n: int = KAGGLE_TOP_N,
    classes: np.ndarray | None = None,
    num_classes: int = 3862,
    segment_size: int = 5,
) -> SubmissionScore:
    """MAP@`top_n` (0: no cap) of the submission `path` against `truth`. `classes`: the
    whitelist (int64, increasing; None: every class of ``0..num_classes-1``)."""
    known = np.arange(num_classes, dtype=np.int64) if classes is None else classes
    what = "not in the whitelist" if classes is not None else f"outside 0..{num_classes - 1}"
    index = RatedIndex(truth, segment_size)
    positives = truth.positives(num_classes)
    counts = {"entries": 0, "over_top_n": 0, "off_grid": 0}
    submitted: list[int] = []

    def matched_lines():
        """The lines matched by `MATCH_THREADS` threads (the kernels release the GIL), in
        file order, at most 2 per thread ahead of the reader; an error of a line is raised
        before those of the lines after it."""
        pending: deque = deque()
        with ThreadPoolExecutor(MATCH_THREADS) as pool:
            try:
                for number, label, entries in iter_submission_lines(path, known, what):
                    where = f"{path}, line {number}"
                    pending.append((label, pool.submit(index.match, entries, label, where)))
                    while len(pending) > 2 * MATCH_THREADS:
                        done, future = pending.popleft()
                        yield done, future.result()
            except SegmentError:
                for _, future in pending:
                    future.result()  # an earlier line's error comes first
                raise
            while pending:
                done, future = pending.popleft()
                yield done, future.result()

    def scores():
        for label, matched in matched_lines():
            counts["entries"] += len(matched.codes)
            counts["over_top_n"] += max(len(matched.codes) - top_n, 0) if top_n > 0 else 0
            counts["off_grid"] += matched.off_grid
            submitted.append(label)
            yield label, score_codes(matched.codes, top_n)

    result = mean_average_precision(scores(), positives, truth.where)
    missing = np.setdiff1d(known[known < len(positives)], submitted)
    warnings = {
        "warning_entries_past_top_n": counts["over_top_n"],
        "warning_entries_off_the_segment_grid": counts["off_grid"],
        "warning_classes_with_positives_missing": int(np.count_nonzero(positives[missing])),
    }
    _warn(warnings, top_n, segment_size)
    return SubmissionScore(result, top_n, counts["entries"], warnings)


def _warn(warnings: dict[str, int], top_n: int, segment_size: int) -> None:
    texts = {
        "warning_entries_past_top_n": f"entries past --top_n={top_n} in their line: not scored",
        "warning_entries_off_the_segment_grid": (
            f"entries whose start is not a multiple of {segment_size} s (or has leading "
            "zeros): no segment of inference, scored as written"
        ),
        "warning_classes_with_positives_missing": (
            "classes with rated positives have no line in the submission: not in the mean"
        ),
    }
    for name, count in warnings.items():
        if count:
            log.warning("%d %s", count, texts[name])


def main(argv: list[str]) -> int:
    """`yt8m score-segments ...`."""
    parser = argparse.ArgumentParser(
        prog="yt8m score-segments", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--submission_file", required=True, help="Class,Segments CSV (.gz too)")
    parser.add_argument("--eval_data_pattern", required=True, help="glob of the rated TFRecords")
    parser.add_argument(
        "--top_n", type=int, default=KAGGLE_TOP_N, help="entries scored per class (0: all)"
    )
    parser.add_argument(
        "--segment_label_ids_file",
        default="",
        help="whitelist (header Index): other classes are errors",
    )
    parser.add_argument("--num_classes", type=int, default=3862, help="vocabulary size")
    parser.add_argument("--segment_size", type=int, default=5, help="frames (seconds) per segment")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    expand_pattern(args.eval_data_pattern)  # no match fails before the submission is read
    classes = (
        read_segment_label_ids(args.segment_label_ids_file, args.num_classes)
        if args.segment_label_ids_file
        else None
    )
    truth = read_rated_pairs(args.eval_data_pattern)
    log.info(
        "%d rated pairs of %d videos in %s", len(truth.label), len(truth.video_ids), truth.where
    )
    score = score_submission(
        args.submission_file,
        truth,
        top_n=args.top_n,
        classes=classes,
        num_classes=args.num_classes,
        segment_size=args.segment_size,
    )
    if args.json:
        print(json.dumps(score.as_dict()))
    else:
        r = score.result
        cap = f"@{args.top_n}" if args.top_n > 0 else ""
        print(
            f"MAP{cap} = {r.map:.6f} over {r.classes} classes ({r.classes_without_positives} "
            f"submitted classes without positives not counted); rated pairs found "
            f"{r.rated_pairs} ({r.positive_pairs} positive) in {score.entries} entries",
            flush=True,
        )
    return 0
