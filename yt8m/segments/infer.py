"""`yt8m infer --segment_labels`: the Kaggle 2019 segment submission (successors.md §2).

    yt8m infer --segment_labels --segment_max_pred=100000 \\
        --segment_label_ids_file=segment_label_ids.csv \\
        --input_data_pattern='test*.tfrecord' --train_dir=DIR --output_file=segments.csv.gz

Every video is cut into consecutive ``--segment_size``-frame segments
(`yt8m.segments.batches.VideoSegments`), each segment is scored by the checkpoint's model
on the whitelisted classes, and the best ``--segment_max_pred`` segments of each class over
the whole input are kept as they stream past (`yt8m.segments.selection`: memory bounded by
the kept entries, not by the input). ``--batch_size`` counts segments. The file
(`yt8m.segments.submission`) appears only once complete; under torchrun every rank selects
on its share and rank 0 merges the selections into the one file (`yt8m.segments.ranks`).

The starter scored each segment on its ``--top_k`` best classes only (then kept the best
per class); here every segment is scored on every whitelisted class, as the task defines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from yt8m.distributed import Process
from yt8m.flags import Flags
from yt8m.inference import predict
from yt8m.segments.batches import VideoSegments
from yt8m.segments.ranks import merged_over_ranks
from yt8m.segments.selection import TopKPerClass
from yt8m.segments.submission import write_segment_submission
from yt8m.segments.whitelist import read_segment_label_ids

log = logging.getLogger("yt8m.infer")


def infer_segments(flags: Flags, model: nn.Module, data_flags: Flags, process: Process) -> Path:
    """Write the segment submission of `model` (restored by `yt8m.inference`) for
    ``--input_data_pattern``; `data_flags` carry the checkpoint's vocabulary."""
    classes = read_segment_label_ids(flags.segment_label_ids_file, data_flags.num_classes)
    stream = VideoSegments(
        data_flags, flags.input_data_pattern, rank=process.rank, world_size=process.world_size
    )
    top = TopKPerClass(len(classes), flags.segment_max_pred)
    columns = torch.from_numpy(classes)  # predict hands the probabilities to the host
    for batch, probabilities in predict(model, stream, flags, process, "infer segments"):
        scores = probabilities.index_select(1, columns).cpu().numpy()
        top.add(scores, batch["segment_ids"].numpy(), batch["video_ids"])
    output = Path(flags.output_file)
    ids = len(stream.video_ids) * stream.slots
    merged = merged_over_ranks(top, ids, stream.video_ids, process, output.parent)
    if merged is not None:
        selection, _, video_lists = merged
        video_ids = [video for videos in video_lists for video in videos]
        write_segment_submission(
            output, classes, selection, video_ids, stream.slots, flags.segment_size
        )
        log.info(
            "wrote %s: %d classes, the best %d segments of %d videos each",
            output,
            len(classes),
            flags.segment_max_pred,
            len(video_ids),
        )
    return output
