"""``--start_from``: fine-tuning starts from another run's checkpoint (successors.md §2:
pretrain on video-level labels, fine-tune on the rated segments).

A train_dir without a checkpoint of its own, given ``--start_from=DIR`` (DIR's latest
checkpoint) or ``--start_from=DIR/model.ckpt-STEP.pt``, builds the checkpoint's model (its
model flags and ``num_classes``; command-line model flags that differ give a warning) and
loads its weights (its EMA weights when it has them, unless ``--use_ema=False``, as eval and
infer predict with them); the optimizer, the step and so the learning-rate schedule start over.
Once the train_dir has checkpoints, training resumes from them (with their ``num_classes``)
and ``--start_from`` is not read. The data format (``--frame_features``, ``--feature_names``,
``--feature_sizes``) must be the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from yt8m.checkpoint import Checkpoint, find_checkpoint, load_checkpoint, warn_flag_differences
from yt8m.flags import Flags
from yt8m.segments.errors import SegmentError

log = logging.getLogger("yt8m.train")

DATA_FORMAT_FLAGS = ("frame_features", "feature_names", "feature_sizes")


def pretrained_start(
    flags: Flags, resumed: Checkpoint | None, warn: bool = True
) -> tuple[Flags, Checkpoint | None]:
    """For ``--start_from``: `flags` with the vocabulary (``num_classes``) of the run, and
    the checkpoint to start from. When the train_dir has a checkpoint (`resumed`), that is
    the run: its ``num_classes``, nothing to start from. Otherwise the ``--start_from``
    checkpoint and its model flags too. `warn`: log differing flags (rank 0 only)."""
    if resumed is not None:
        return dataclasses.replace(flags, num_classes=resumed.flags.num_classes), None
    source = Path(flags.start_from)
    path = source if source.is_file() else find_checkpoint(source, -1)
    checkpoint = load_checkpoint(path)
    saved = checkpoint.flags
    if (flags.frame_features, flags.feature_list()) != (saved.frame_features, saved.feature_list()):
        given = " ".join(f"--{name}={getattr(flags, name)!r}" for name in DATA_FORMAT_FLAGS)
        trained = " ".join(f"--{name}={getattr(saved, name)!r}" for name in DATA_FORMAT_FLAGS)
        raise SegmentError(
            f"--start_from={flags.start_from}: {path} was trained on {trained}, this run reads "
            f"{given}; give the checkpoint's values"
        )
    if warn:
        warn_flag_differences(flags, checkpoint)
        if flags.num_classes not in (saved.num_classes, Flags().num_classes):
            log.warning(
                "--num_classes=%d differs from %d in %s; the checkpoint's vocabulary is used",
                flags.num_classes,
                saved.num_classes,
                path,
            )
        log.info(
            "starting from %s (step %d); the learning rate schedule starts over",
            path,
            checkpoint.step,
        )
    model_flags = {name: value for name, _, value in flags.model_differences(saved)}
    return dataclasses.replace(flags, **model_flags, num_classes=saved.num_classes), checkpoint
