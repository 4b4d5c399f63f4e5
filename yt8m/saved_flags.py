"""The data format eval and infer take from a checkpoint's flag table, like its model.

A model reads the inputs it was trained on: ``--frame_features``, ``--feature_names``,
``--feature_sizes`` and ``--num_classes`` come from the checkpoint (a frame-level model is
evaluated as such without the user repeating the flags). A flag the command line gave
that differs is named in a warning; defaults nobody typed are not reported.
"""

from __future__ import annotations

import dataclasses
import logging

from yt8m.checkpoint import Checkpoint
from yt8m.flags import FlagError, Flags

log = logging.getLogger("yt8m.checkpoint")

DATA_FLAGS = ("frame_features", "feature_names", "feature_sizes", "num_classes")


def _meaning(flags: Flags, name: str) -> object:
    """What a data flag means once defaults are filled in (empty names: rgb,audio, ...)."""
    if name not in ("feature_names", "feature_sizes"):
        return getattr(flags, name)
    try:
        pairs = flags.feature_list()
    except FlagError:
        return getattr(flags, name)
    return [pair[0 if name == "feature_names" else 1] for pair in pairs]


def with_checkpoint_data_flags(flags: Flags, checkpoint: Checkpoint) -> Flags:
    """`flags` with the checkpoint's data format; warns for each given flag that differs."""
    saved = checkpoint.flags
    for name in DATA_FLAGS:
        if flags.was_given(name) and _meaning(flags, name) != _meaning(saved, name):
            log.warning(
                "--%s=%s on the command line differs from %s in %s; the checkpoint's value is used",
                name,
                getattr(flags, name),
                getattr(saved, name) or "(empty)",
                checkpoint.path,
            )
    data_flags = dataclasses.replace(flags, **{name: getattr(saved, name) for name in DATA_FLAGS})
    data_flags.given = flags.given
    return data_flags
