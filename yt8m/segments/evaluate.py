"""`yt8m eval --segment_labels`: MAP@K of a checkpoint on segment-rated data (successors.md
§2), K = ``--segment_max_pred``.

The rated segments of ``--eval_data_pattern`` (`yt8m.segments.batches`, one example per
rated start time) are scored by the model on the whitelisted classes
(``--segment_label_ids_file``; without it every class), the best K of each class are
selected as inference selects them (`yt8m.segments.selection`; equal scores: the segment
read first), and the MAP follows `yt8m.segments.map_at_k`. Only rated segments are scored:
the order of the rated pairs, which is all the metric reads, is that of inference on
every segment; only the cap differs (here it counts rated segments alone). The loss is
``--label_loss`` with the label weights (rated classes only), averaged over segments.

Reported (stdout, TensorBoard, ``eval-STEP.json``): ``segment_map_at_K``, the classes
counted, ``segment_rated_pairs_found`` / ``segment_positive_pairs_found`` in the capped
lists, ``segment_rated_pairs`` in the data, ``avg_loss``, ``num_segments``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yt8m.distributed import Process
from yt8m.flags import Flags
from yt8m.inference import predict, restore_for_prediction
from yt8m.losses import get_loss
from yt8m.segments.batches import rated_segment_loader
from yt8m.segments.map_at_k import NEGATIVE, POSITIVE, UNRATED, mean_average_precision, score_codes
from yt8m.segments.ranks import merged_over_ranks
from yt8m.segments.selection import Selection, TopKPerClass, key_ids
from yt8m.segments.whitelist import read_segment_label_ids

log = logging.getLogger("yt8m.eval")


def evaluate_segments(
    flags: Flags, check_point: int, process: Process, report: Callable[[Flags, dict], Any]
) -> dict[str, Any]:
    """Evaluate one checkpoint on the rated segments; rank 0 reports with `report` and
    returns the numbers, other ranks return {}."""
    model, checkpoint, data_flags = restore_for_prediction(flags, check_point, process)
    num_classes = data_flags.num_classes
    classes = (
        read_segment_label_ids(flags.segment_label_ids_file, num_classes)
        if flags.segment_label_ids_file
        else np.arange(num_classes, dtype=np.int64)
    )
    log.info("evaluating %s (step %d) on rated segments", checkpoint.path, checkpoint.step)
    loader = rated_segment_loader(
        data_flags,
        flags.eval_data_pattern,
        training=False,
        rank=process.rank,
        world_size=process.world_size,
    )
    label_loss = get_loss(flags.label_loss, flags.alpha)
    top = TopKPerClass(len(classes), flags.segment_max_pred)
    columns = torch.from_numpy(classes)  # predict hands the probabilities to the host
    loss_sum, segments, rated = 0.0, 0, []
    for batch, probabilities in predict(model, loader, flags, process, "eval segments"):
        count = len(batch["video_ids"])
        labels = batch["labels"].to(probabilities.device)
        loss = label_loss(probabilities, labels, batch["label_weights"])
        loss_sum += float(loss) * count
        segments += count
        top.add(
            probabilities.index_select(1, columns).cpu().numpy(),
            batch["segment_ids"].numpy(),
            batch["video_ids"],
        )
        rated.append(np.stack([batch["rated"][0], batch["rated"][1], batch["rated"][2] > 0]))
    pairs = np.concatenate(rated, axis=1) if rated else np.zeros((3, 0), np.int64)
    extra = {"pairs": pairs.tolist(), "loss_sum": loss_sum, "segments": segments}
    directory = Path(flags.train_dir) / "eval"
    merged = merged_over_ranks(top, segments, extra, process, directory)
    if merged is None:
        return {}
    selection, offsets, extras = merged
    pairs = np.concatenate(
        [
            np.asarray(e["pairs"], np.int64).reshape(3, -1) + [[o], [0], [0]]
            for e, o in zip(extras, offsets, strict=True)
        ],
        axis=1,
    )
    total = sum(e["segments"] for e in extras)
    result = _map(selection, classes, pairs, num_classes, flags.eval_data_pattern)
    numbers = {
        "step": checkpoint.step,
        "checkpoint": str(checkpoint.path),
        **result.as_dict(flags.segment_max_pred),
        "segment_rated_pairs": int(pairs.shape[1]),
        "avg_loss": sum(e["loss_sum"] for e in extras) / max(total, 1),
        "num_segments": total,
    }
    report(flags, numbers)
    return numbers


def _map(
    selection: Selection, classes: np.ndarray, pairs: np.ndarray, num_classes: int, where: str
):
    """MAP of the selected lists against the rated pairs ``[3, P]`` (segment id, class,
    positive)."""
    keys = pairs[0] * num_classes + pairs[1]
    order = np.argsort(keys)
    keys, positive = keys[order], pairs[2][order].astype(bool)
    rated_codes = np.where(positive, POSITIVE, NEGATIVE).astype(np.int8)
    positives = np.bincount(pairs[1][pairs[2] > 0], minlength=num_classes)

    def scores():
        for c, label in enumerate(classes.tolist()):
            wanted = key_ids(selection.column(c)) * num_classes + label
            at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
            found = keys[at] == wanted if len(keys) else np.zeros(len(wanted), bool)
            codes = np.where(found, rated_codes[at] if len(keys) else UNRATED, UNRATED).astype(
                np.int8
            )
            yield label, score_codes(codes, 0)

    return mean_average_precision(scores(), positives, where)
