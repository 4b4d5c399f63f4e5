"""Ensembles of prediction files: `yt8m average` (file_averaging.py) and `yt8m ensemble`.

Averaging (fidelity.md §6): for every video, the weighted mean over the files of each
label's confidence (a label absent from a file counts 0), divided by the total weight; the top_k labels (20) are written, highest mean
first, equal means: smaller label first (the ranking rule of `yt8m.metrics`). Every pair of every
line is read (the original's script read only the first half of each line's pairs).
The mean is computed in float64 from the files' values (the original truncated each
confidence to 5 decimals first).

A Kaggle submission needs every video in every file: files whose videos differ are an
error naming each file and how many videos of the first file it lacks and how many it
adds; ``--allow_missing_videos`` averages them anyway (a video absent from a file counts
0, as the original's counters did) and warns with those counts. An output that is one of
the inputs is refused; an existing output is replaced, and the command says so.

Streaming: the files are read in chunks of lines side by side; two threads read and
parse the next chunk of every file while the current one is averaged (the compiled
parser and numpy release the GIL). While they list the same videos in the same order
(what `yt8m infer` writes for one split) each chunk is summed and ranked at once by one
compiled pass (`_sum_and_rank`) and written, so memory stays bounded by two chunks of
every file. From the first
chunk where they differ, the remaining pairs are collected (16 bytes per pair) and
averaged at the end; videos are then written in order of first appearance.

`yt8m ensemble fit` learns non-negative weights that maximise GAP on a labelled split
(coordinate search from equal weights, keeping only improvements, so the fitted GAP is
never below the equal-weight GAP on that split); `yt8m ensemble apply` averages test
files with them. ``--holdout=FRACTION`` keeps that fraction of the labelled videos out of
the fit and scores both weightings on them too: the GAP on the videos fitted on flatters
the fitted weights, the held-out GAP does not.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from yt8m.atomic import atomic_output
from yt8m.compiled import kernel
from yt8m.cpu_memory import keep_freed_memory
from yt8m.errors import YT8MError
from yt8m.metrics import insert_ranked, pooled_average_precision, top_k_per_row
from yt8m.submission import (
    SUBMISSION_HEADER,
    SubmissionChunk,
    format_ranked_lines,
    read_submission_chunks,
)

# The seven files of the original file_averaging.py (read from the current directory,
# with `.csv` appended) and its output. Two of these names differ from what the seed's
# inference commands write; the missing-file error shows the close match.
WILLOW_INPUTS = (
    "test-gatednetvladLF-256k-1024-80-0002-300iter-norelu-basic-gatedmoe",
    "test-GRU-0002-1200-2",
    "test-gatednetfvLF-128k-1024-80-0002-300iter-norelu-basic-gatedmoe",
    "test-gateddboflf-4096-1024-80-0002-300iter",
    "test-softdboflf-8000-1024-80-0002-300iter",
    "test-gatedlightvladLF-256k-1024-80-0002-300iter-norelu-basic-gatedmoe",
    "test-lstm-0002-val-150-random",
)
WILLOW_OUTPUT = "WILLOW_submission.csv"
_READ_THREADS = 2  # threads reading and parsing the files' next chunks
_ALLOW_HELP = (
    "average files whose videos differ (a video absent from a file counts 0) with a warning, "
    "instead of stopping"
)
_DENSE_LABELS = 1 << 16  # above this label number, the labels present are renumbered


class EnsembleError(YT8MError, ValueError):
    """Bad ensemble input: missing file, bad weight, duplicated video, unknown video."""


@dataclass
class Model:
    """One prediction file and its weight."""

    path: str
    weight: float


# ---- inputs -----------------------------------------------------------------------------


def parse_models(specs: Sequence[str], weights: Sequence[float] | None = None) -> list[Model]:
    """`FILE[:WEIGHT]` specs (or FILEs plus `weights`) -> models; the weight defaults to 1."""
    models = []
    for spec in specs:
        path, weight = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep and head and "/" not in tail and not os.path.exists(spec):
            try:
                path, weight = head, float(tail)
            except ValueError:
                raise EnsembleError(
                    f"{spec}: the weight {tail!r} is not a number (FILE:WEIGHT, e.g. {head}:0.5)"
                ) from None
        models.append(Model(path, weight))
    if weights is not None:
        if len(weights) != len(models):
            raise EnsembleError(f"{len(weights)} weights for {len(models)} files")
        models = [Model(m.path, float(w)) for m, w in zip(models, weights, strict=True)]
    for m in models:
        if not (np.isfinite(m.weight) and m.weight >= 0):
            raise EnsembleError(f"{m.path}: weight {m.weight} must be a non-negative number")
    if not models or sum(m.weight for m in models) <= 0:
        raise EnsembleError("no input file with a positive weight")
    return models


def check_files_exist(paths: Sequence[str]) -> None:
    """Raise one error listing every missing file with the close matches that exist."""
    problems = []
    for path in paths:
        if os.path.isfile(path):
            continue
        folder = os.path.dirname(path) or "."
        siblings = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        close = difflib.get_close_matches(os.path.basename(path), siblings, n=3, cutoff=0.6)
        hint = f" (close match: {', '.join(close)})" if close else " (no close match)"
        problems.append(f"{path}{hint}")
    if problems:
        raise EnsembleError("missing prediction file(s): " + "; ".join(problems))


class _VideoIndex:
    """Video id -> index in order of first appearance, and per-file duplicate checks."""

    def __init__(self, num_files: int) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []
        self._seen = [np.zeros(0, dtype=bool) for _ in range(num_files)]
        self._shared = 0  # videos 0 .. _shared - 1 are in every file (aligned chunks)

    def add_to_all(self, chunk: SubmissionChunk) -> None:
        """Register the chunk's videos, listed alike by every file; error on a repeat."""
        ids = chunk.video_ids
        fresh = dict.fromkeys(ids)
        if len(fresh) != len(ids) or not self.ids.keys().isdisjoint(fresh):
            seen = set(self.ids)
            for offset, video_id in enumerate(ids):
                if video_id in seen:
                    _raise_duplicate(chunk, offset)
                seen.add(video_id)
        start = len(self.names)
        self.ids.update(zip(ids, range(start, start + len(ids)), strict=True))
        self.names.extend(ids)
        self._shared = len(self.names)

    def add(self, file: int, chunk: SubmissionChunk) -> np.ndarray:
        """Indices [n] of the chunk's videos; error on a video seen before in that file."""
        indices = np.empty(len(chunk.video_ids), dtype=np.int64)
        ids, names = self.ids, self.names
        for position, video_id in enumerate(chunk.video_ids):
            found = ids.get(video_id)
            if found is None:
                found = ids[video_id] = len(names)
                names.append(video_id)
            indices[position] = found
        seen = self._seen[file]
        if seen.size < len(self.ids):
            seen = self._seen[file] = np.concatenate(
                [seen, np.zeros(max(len(self.ids), 2 * seen.size) - seen.size, bool)]
            )
        _, first = np.unique(indices, return_index=True)
        repeated = np.ones(indices.size, dtype=bool)
        repeated[first] = False
        repeated |= seen[indices] | (indices < self._shared)
        if repeated.any():
            _raise_duplicate(chunk, int(np.flatnonzero(repeated)[0]))
        seen[indices] = True
        return indices

    def present(self, file: int) -> np.ndarray:
        """bool [videos so far]: which videos `file` listed."""
        listed = np.zeros(len(self.names), dtype=bool)
        listed[: self._shared] = True
        seen = self._seen[file][: len(self.names)]
        listed[: seen.size] |= seen
        return listed


def _raise_duplicate(chunk: SubmissionChunk, offset: int) -> None:
    raise EnsembleError(
        f"{chunk.path}:{chunk.first_line + offset}: duplicated video id '{chunk.video_ids[offset]}'"
    )


# ---- averaging ----------------------------------------------------------------------------


def _top_k_of_sums(
    labels: tuple[np.ndarray, ...],
    values: tuple[np.ndarray, ...],
    starts: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the values of equal labels per row, then rank each row.

    labels[f], values[f]: the pairs of file f ([P_f] int64 >= 0, float64, weighted);
    starts [F, R + 1] int64: row r's pairs of file f are
    labels[f][starts[f, r] : starts[f, r + 1]]. A row sums in file order, then pair order
    (as the original's counters added them). Label numbers above `_DENSE_LABELS` are renumbered
    in order first. Returns labels [R, k] (-1 where a row has fewer than k distinct
    labels) and their sums [R, k] (-inf there), highest first, equal sums: smaller label
    first.
    """
    names = None
    span = 1 + max(int(part.max(initial=0)) for part in labels)
    if span > _DENSE_LABELS:
        names = np.unique(np.concatenate(labels))
        labels = tuple(np.searchsorted(names, part) for part in labels)
        span = names.size
    top_labels, top_sums = _sum_and_rank(labels, values, starts, k, span)
    if names is not None:
        top_labels[top_labels >= 0] = names[top_labels[top_labels >= 0]]
    return top_labels, top_sums


@kernel
def _sum_and_rank(labels, values, starts, k, span):
    """`_top_k_of_sums` for labels < span: one row at a time, summed in a dense [span]
    scratch (in cache), ranked by insertion into the row's k best."""
    num_files, num_rows = starts.shape[0], starts.shape[1] - 1
    sums = np.zeros(span)
    present = np.zeros(span, np.bool_)
    touched = np.empty(span, np.int64)
    top_labels = np.full((num_rows, k), -1, np.int64)
    top_sums = np.full((num_rows, k), -np.inf)
    for row in range(num_rows):
        distinct = 0
        for file in range(num_files):
            file_labels, file_values = labels[file], values[file]
            for pair in range(starts[file, row], starts[file, row + 1]):
                label = file_labels[pair]
                touched[distinct] = label  # kept when the label is new (no branch)
                distinct += not present[label]
                present[label] = True
                sums[label] += file_values[pair]
        held = 0
        for i in range(distinct):
            label = touched[i]
            held = insert_ranked(sums[label], label, held, top_sums[row], top_labels[row])
            sums[label] = 0.0
            present[label] = False
    return top_labels, top_sums


def _ragged_rows(
    video: np.ndarray, labels: np.ndarray, values: np.ndarray, num_videos: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of videos 0..num_videos-1 given as flat arrays -> padded [num_videos, M]."""
    order = np.argsort(video, kind="stable")
    video, labels, values = video[order], labels[order], values[order]
    counts = np.bincount(video, minlength=num_videos)
    width = max(int(counts.max()) if counts.size else 0, 1)
    starts = np.cumsum(counts) - counts
    column = np.arange(video.size) - starts[video]
    padded_labels = np.full((num_videos, width), -1, dtype=np.int64)
    padded_values = np.zeros((num_videos, width))
    padded_labels[video, column] = labels
    padded_values[video, column] = values
    return padded_labels, padded_values


def _weighted(chunk: SubmissionChunk, weight: float) -> np.ndarray:
    """weight * confidence, as the original computed it (x * 1.0 == x: no copy)."""
    return chunk.confidences if weight == 1.0 else chunk.confidences * weight


def _read_steps(
    paths: Sequence[str], lines_per_chunk: int
) -> Iterator[list[tuple[int, SubmissionChunk | None]]]:
    """Steps of (file, its next chunk or None at its end) for the files not yet at
    their end, in file order. Threads read and parse the next step while the caller
    works on this one (numpy releases the GIL), so memory holds two steps."""
    readers = [read_submission_chunks(path, lines_per_chunk) for path in paths]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        ahead = {file: pool.submit(next, reader, None) for file, reader in enumerate(readers)}
        while ahead:
            step = [(file, future.result()) for file, future in ahead.items()]
            ahead = {f: pool.submit(next, readers[f], None) for f, c in step if c is not None}
            yield step


def _check_same_videos(index: _VideoIndex, models: Sequence[Model], allow_missing: bool) -> None:
    """Every file must list the first file's videos, no fewer and no more: an error naming
    each file that differs, or with `allow_missing` one warning line per such file."""
    first = index.present(0)
    problems = []
    for file in range(1, len(models)):
        listed = index.present(file)
        lacks, adds = int((first & ~listed).sum()), int((listed & ~first).sum())
        if lacks or adds:
            problems.append(
                f"{models[file].path} lacks {lacks} of the {int(first.sum())} videos of "
                f"{models[0].path} and adds {adds} it does not have"
            )
    if problems and not allow_missing:
        raise EnsembleError(
            "; ".join(problems) + ": a submission needs every video in every file "
            "(--allow_missing_videos averages anyway, a video absent from a file counting 0)"
        )
    for problem in problems:
        print(f"warning: {problem}; absent videos count 0", file=sys.stderr)


def _average_streams(
    models: Sequence[Model], top_k: int, lines_per_chunk: int, allow_missing: bool = False
) -> Iterator[tuple[Sequence[str] | np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (video ids, top labels [n, k], mean confidences [n, k]) in output order.

    Raises `EnsembleError` once every file is read when their videos differ (unless
    `allow_missing`); what was yielded before then belongs to an output to discard.
    """
    total_weight = sum(m.weight for m in models)
    num_files = len(models)
    index = _VideoIndex(len(models))
    collected: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    aligned, emitted = True, 0
    for step in _read_steps([m.path for m in models], lines_per_chunk):
        chunks = [c for _, c in step]
        if aligned and all(c is None for c in chunks):
            return
        if aligned and all(c is not None and c.same_videos(chunks[0]) for c in chunks):
            index.add_to_all(chunks[0])
            count = len(chunks[0].ids)
            starts = np.zeros((num_files, count + 1), dtype=np.int64)
            np.cumsum([c.pair_counts for c in chunks], axis=1, out=starts[:, 1:])
            top_labels, top_sums = _top_k_of_sums(
                tuple(c.labels for c in chunks),
                tuple(_weighted(c, m.weight) for c, m in zip(chunks, models, strict=True)),
                starts,
                top_k,
            )
            emitted += count
            yield chunks[0].ids, top_labels, top_sums / total_weight
            continue
        aligned = False  # from here on: collect everything, average at the end
        for file, chunk in step:
            if chunk is not None:
                video = np.repeat(index.add(file, chunk), chunk.pair_counts)
                order_key = video * num_files + file  # sorts by video, then file
                collected.append((order_key, chunk.labels, _weighted(chunk, models[file].weight)))
    _check_same_videos(index, models, allow_missing)
    if collected:
        video, labels, values = (np.concatenate(parts) for parts in zip(*collected, strict=True))
    else:
        video, labels, values = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    order = np.argsort(video, kind="stable")
    video = video[order] // num_files - emitted
    labels, values = labels[order], values[order]
    remaining = len(index.names) - emitted
    for start in range(0, remaining, lines_per_chunk):
        stop = min(start + lines_per_chunk, remaining)
        starts = np.searchsorted(video, np.arange(start, stop + 1))[None, :]
        top_labels, top_sums = _top_k_of_sums((labels,), (values,), starts, top_k)
        yield index.names[emitted + start : emitted + stop], top_labels, top_sums / total_weight


def check_output(output: str | os.PathLike, inputs: Sequence[str]) -> None:
    """Refuse an output that is one of the inputs, or a remote one; say so when an existing
    file is replaced."""
    if "://" in os.fspath(output):
        raise EnsembleError(
            f"--output_file {os.fspath(output)}: outputs are written locally; copy it afterwards"
        )
    if not os.path.exists(output):
        return
    for path in inputs:
        if os.path.exists(path) and os.path.samefile(path, output):
            raise EnsembleError(
                f"--output_file {os.fspath(output)} is the input {path}: writing it would "
                "replace that input; give another --output_file"
            )
    print(f"replacing the existing {os.fspath(output)}", file=sys.stderr)


def average_files(
    models: Sequence[Model],
    output: str | os.PathLike,
    top_k: int = 20,
    lines_per_chunk: int = 8192,
    progress: bool | None = None,
    allow_missing: bool = False,
) -> int:
    """Write the weighted average of `models` to `output` (atomically); returns videos.

    Files whose videos differ are an `EnsembleError` unless `allow_missing`; nothing is
    written then. An `output` that is one of the inputs is refused.
    """
    check_files_exist([m.path for m in models])
    check_output(output, [m.path for m in models])
    written = 0
    with (
        atomic_output(output) as out,
        tqdm(unit=" videos", disable=not progress if progress is not None else None) as bar,
    ):
        out.write(SUBMISSION_HEADER + "\n")
        averages = _average_streams(models, top_k, lines_per_chunk, allow_missing)
        for video_ids, labels, means in averages:
            out.write(format_ranked_lines(video_ids, labels, means))
            written += len(video_ids)
            bar.update(len(video_ids))
    return written


def average_main(argv: list[str]) -> int:
    """`yt8m average` / `python file_averaging.py`."""
    parser = argparse.ArgumentParser(
        prog="yt8m average",
        description="Weighted average of prediction CSVs. Without FILEs: the original's "
        f"file_averaging.py (its seven files, equal weights, into {WILLOW_OUTPUT}).",
    )
    parser.add_argument(
        "files", nargs="*", metavar="FILE[:WEIGHT]", help="prediction CSVs (.gz too)"
    )
    parser.add_argument("--weights", help="comma-separated weights, one per FILE")
    parser.add_argument("--output_file", "--output", default=WILLOW_OUTPUT)
    parser.add_argument("--top_k", type=int, default=20, help="pairs written per video (20)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow_missing_videos", action="store_true", help=_ALLOW_HELP)
    args = parser.parse_args(argv)
    if args.top_k <= 0:
        raise EnsembleError(f"--top_k={args.top_k}: must be positive")
    keep_freed_memory()  # chunk after chunk reuses the same memory (about 10% faster)
    specs = args.files or [f"{name}.csv" for name in WILLOW_INPUTS]
    weights = _parse_weights(args.weights)
    models = parse_models(specs, weights)
    count = average_files(
        models,
        args.output_file,
        args.top_k,
        progress=False if args.no_progress else None,
        allow_missing=args.allow_missing_videos,
    )
    print(f"averaged {len(models)} files, {count} videos -> {args.output_file}")
    return 0


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise EnsembleError(f"--weights={text}: expected comma-separated numbers") from None


# ---- learned weights ------------------------------------------------------------------------


class FittingProblem:
    """Every model's predictions on a labelled split, on the union of predicted pairs.

    scores [V, M, F] float32 (video, slot, model; 0 where a model has no such pair),
    relevant [V, M] bool, valid [V, M] bool; num_positives: all labels of the split.
    """

    def __init__(
        self, files: Sequence[str], labels: Iterator[tuple[str, np.ndarray]], lines_per_chunk: int
    ) -> None:
        ids: dict[str, int] = {}
        true_video, true_label = [], []
        for video_id, video_labels in labels:
            if video_id in ids:
                raise EnsembleError(f"video '{video_id}' appears twice in the labelled split")
            video = ids[video_id] = len(ids)
            true_video.append(np.full(len(video_labels), video, dtype=np.int64))
            true_label.append(np.asarray(video_labels, dtype=np.int64))
        index = _VideoIndex(len(files))
        index.ids, index.names = ids, list(ids)
        video, label, model, conf = [], [], [], []
        for file, path in enumerate(files):
            for chunk in read_submission_chunks(path, lines_per_chunk):
                unknown = [v for v in chunk.video_ids if v not in ids]
                if unknown:
                    line = chunk.first_line + chunk.video_ids.index(unknown[0])
                    raise EnsembleError(
                        f"{path}:{line}: video '{unknown[0]}' is not in the labelled split"
                    )
                video.append(np.repeat(index.add(file, chunk), chunk.pair_counts))
                label.append(chunk.labels)
                model.append(np.full(chunk.labels.size, file, dtype=np.int64))
                conf.append(chunk.confidences)
        video_a, label_a, model_a, conf_a = (
            np.concatenate(x) if x else np.zeros(0) for x in (video, label, model, conf)
        )
        true_v = np.concatenate(true_video) if true_video else np.zeros(0, np.int64)
        true_l = np.concatenate(true_label) if true_label else np.zeros(0, np.int64)
        span = int(max(label_a.max(initial=0), true_l.max(initial=0))) + 1
        keys, slot = np.unique(video_a.astype(np.int64) * span + label_a, return_inverse=True)
        per_model = np.zeros((keys.size, len(files)), dtype=np.float64)
        np.add.at(per_model, (slot, model_a.astype(np.int64)), conf_a)
        relevant = np.isin(keys, true_v * span + true_l)
        videos = keys // span
        padded_labels, _ = _ragged_rows(videos, np.arange(keys.size), np.zeros(keys.size), len(ids))
        self.valid = padded_labels >= 0
        slots = np.where(self.valid, padded_labels, 0)
        self.scores = np.where(self.valid[:, :, None], per_model[slots], 0).astype(np.float32)
        self.relevant = relevant[slots] & self.valid
        self.positives_per_video = np.bincount(true_v, minlength=len(ids))
        self.num_positives = int(true_l.size)
        self.num_videos = len(ids)

    def subset(self, videos: np.ndarray) -> FittingProblem:
        """The problem on some of its videos (indices [n] into the labelled split's order)."""
        part = object.__new__(FittingProblem)
        part.scores, part.relevant = self.scores[videos], self.relevant[videos]
        part.valid = self.valid[videos]
        part.positives_per_video = self.positives_per_video[videos]
        part.num_positives = int(part.positives_per_video.sum())
        part.num_videos = len(videos)
        return part

    def gap(self, weights: np.ndarray, top_k: int) -> float:
        """GAP of the weighted mean of the models' confidences (weights [F] >= 0)."""
        mean = self.scores @ (weights / weights.sum()).astype(np.float32)
        mean[~self.valid] = -np.inf
        values, slots = top_k_per_row(mean, top_k)
        real = np.isfinite(values)
        relevant = np.take_along_axis(self.relevant, slots, axis=1) & real
        return pooled_average_precision(values[real], relevant[real], self.num_positives)


def fit_weights(
    problem: FittingProblem, num_models: int, top_k: int, rounds: int = 4
) -> tuple[np.ndarray, float]:
    """Coordinate search from equal weights: each model's weight is scaled by a few
    factors (0 drops it) and a change is kept only when GAP rises. Returns the weights
    (summing to 1) and their GAP."""
    weights = np.ones(num_models)
    best = problem.gap(weights, top_k)
    factors = (0.0, 0.5, 0.8, 1.25, 2.0)
    for _ in range(rounds):
        improved = False
        for m in range(num_models):
            for factor in factors:
                trial = weights.copy()
                base = trial[m] if trial[m] > 0 else trial[trial > 0].mean()
                trial[m] = base * factor
                if trial.sum() <= 0 or np.array_equal(trial, weights):
                    continue
                score = problem.gap(trial, top_k)
                if score > best:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return weights / weights.sum(), best


def holdout_split(num_videos: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(videos to fit on, videos held out): a seeded draw of round(fraction * num_videos)."""
    if not 0 <= fraction < 1:
        raise EnsembleError(f"--holdout={fraction}: a fraction in [0, 1)")
    order = np.random.default_rng(seed).permutation(num_videos)
    held = int(round(fraction * num_videos))
    return np.sort(order[held:]), np.sort(order[:held])


def _load_labels(pattern: str, num_classes: int) -> Iterator[tuple[str, np.ndarray]]:
    from yt8m.data.records import iter_video_labels

    return iter_video_labels(pattern, num_classes)


def fit_main(args: argparse.Namespace) -> int:
    check_files_exist(args.files)
    check_output(args.output, args.files)
    problem = FittingProblem(
        args.files, _load_labels(args.labels_pattern, args.num_classes), args.lines_per_chunk
    )
    count = len(args.files)
    per_model = [problem.gap(np.eye(count)[m], args.top_k) for m in range(count)]
    equal = problem.gap(np.ones(count), args.top_k)
    fit_videos, held_videos = holdout_split(problem.num_videos, args.holdout)
    fitting = problem.subset(fit_videos) if held_videos.size else problem
    weights, fitted = fit_weights(fitting, count, args.top_k)
    for path, score, weight in zip(args.files, per_model, weights, strict=True):
        print(f"GAP {score:.6f}  weight {weight:.4f}  {path}")
    print(
        f"equal weights GAP {equal:.6f} ({problem.num_videos} videos); fitted weights GAP "
        f"{fitted:.6f} on the {fitting.num_videos} videos fitted on"
    )
    report = {
        "top_k": args.top_k,
        "num_videos": problem.num_videos,
        "equal_weight_gap": equal,
        "num_fitted_videos": fitting.num_videos,
        "fitted_gap": fitted,
        "models": [
            {"file": p, "weight": float(w), "gap": g}
            for p, w, g in zip(args.files, weights, per_model, strict=True)
        ],
    }
    if held_videos.size:
        held = problem.subset(held_videos)
        report["holdout"] = {
            "fraction": args.holdout,
            "num_videos": held.num_videos,
            "equal_weight_gap": held.gap(np.ones(count), args.top_k),
            "fitted_gap": held.gap(weights, args.top_k),
        }
        print(
            f"held out ({held.num_videos} videos, not fitted on): equal weights GAP "
            f"{report['holdout']['equal_weight_gap']:.6f}; fitted weights GAP "
            f"{report['holdout']['fitted_gap']:.6f}"
        )
    with atomic_output(args.output) as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    print(f"weights -> {args.output}")
    return 0


def apply_main(args: argparse.Namespace) -> int:
    try:
        with open(args.weights) as f:
            fitted = json.load(f)["models"]
        weights = [float(m["weight"]) for m in fitted]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EnsembleError(
            f"{args.weights}: not a weights file of `yt8m ensemble fit`: {err}"
        ) from None
    if len(weights) != len(args.files):
        raise EnsembleError(
            f"{args.weights} holds {len(weights)} weights (fitted on "
            f"{', '.join(m['file'] for m in fitted)}); {len(args.files)} files given"
        )
    for model, path in zip(fitted, args.files, strict=True):
        print(f"{path} <- weight {model['weight']:.4f} (fitted on {model['file']})")
    models = parse_models(args.files, weights)
    count = average_files(
        models, args.output_file, args.top_k, allow_missing=args.allow_missing_videos
    )
    print(f"averaged {len(models)} files, {count} videos -> {args.output_file}")
    return 0


def ensemble_main(argv: list[str]) -> int:
    """`yt8m ensemble fit|apply`."""
    parser = argparse.ArgumentParser(
        prog="yt8m ensemble",
        description="fit: weights that maximise GAP on a labelled split (validate); "
        "apply: average the test CSVs with them.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    fit = sub.add_parser("fit", help="weights maximising GAP on a labelled split -> JSON")
    fit.add_argument("files", nargs="+", metavar="FILE", help="each model's CSV on the split")
    fit.add_argument("--labels_pattern", required=True, help="TFRecords of the same split")
    fit.add_argument("--num_classes", type=int, default=4716)
    fit.add_argument("--output", default="ensemble_weights.json")
    fit.add_argument("--top_k", type=int, default=20)
    fit.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of the labelled videos kept out of the fit and scored apart (0: none)",
    )
    fit.add_argument("--lines_per_chunk", type=int, default=8192, help=argparse.SUPPRESS)
    apply = sub.add_parser("apply", help="average test CSVs with fitted weights")
    apply.add_argument("files", nargs="+", metavar="FILE", help="test CSVs, in the fit's order")
    apply.add_argument("--weights", required=True, help="JSON written by `yt8m ensemble fit`")
    apply.add_argument("--output_file", "--output", required=True)
    apply.add_argument("--top_k", type=int, default=20)
    apply.add_argument("--allow_missing_videos", action="store_true", help=_ALLOW_HELP)
    args = parser.parse_args(argv)
    return fit_main(args) if args.action == "fit" else apply_main(args)
