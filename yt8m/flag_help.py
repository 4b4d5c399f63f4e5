"""`yt8m train|eval|infer --help`: the flags each command reads, grouped, aligned, with defaults.

Every command accepts the whole flag table (the seed's command lines carry flags of the
other programs); `--help` lists the groups a command uses (`COMMAND_FLAGS`) and
``--helpfull`` every flag. eval and infer rebuild the model and read the data as the
checkpoint says, so their help names those flags without listing them.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap

from yt8m.flags import COMMAND_DEFAULTS, GROUPS, Flags

# command -> (groups shown, flags of those groups it never reads, flags of other groups it reads)
COMMAND_FLAGS: dict[str, tuple[tuple[str, ...], frozenset[str], tuple[str, ...]]] = {
    "train": (
        ("data", "model", "train", "system"),
        frozenset({"eval_data_pattern", "input_data_pattern"}),
        (),
    ),
    "eval": (
        ("data", "eval", "system"),
        frozenset({"train_data_pattern", "input_data_pattern"}),
        ("batch_size", "label_loss", "alpha", "seed"),
    ),
    "infer": (
        ("data", "eval", "inference", "system"),
        frozenset({"train_data_pattern", "eval_data_pattern", "run_once", "eval_poll_secs"}),
        ("batch_size", "seed"),
    ),
}
# Flags eval and infer take from the checkpoint (a given one that differs is warned about).
FROM_CHECKPOINT = ("frame_features", "feature_names", "feature_sizes", "num_classes")

_NOTE = (
    "The model flags (--model, --netvlad_cluster_size, ...: group model) and the data format "
    "(--{}) come from the checkpoint; a flag given here that differs is named in a warning."
)


def _shown(value: object) -> str:
    return '""' if value == "" else str(value)


def help_text(command: str = "train", everything: bool = False) -> str:
    """The help of `command`: its flags by group, with this command's defaults.

    `everything`: every flag of the table (``--helpfull``).
    """
    fields = dataclasses.fields(Flags)
    defaults = {**{f.name: f.default for f in fields}, **COMMAND_DEFAULTS.get(command, {})}
    groups, unused, extra = COMMAND_FLAGS.get(command, (GROUPS, frozenset(), ()))
    if everything:
        groups, unused, extra = GROUPS, frozenset(), ()
    hidden = set(unused) | (
        set(FROM_CHECKPOINT) if command in ("eval", "infer") and not everything else set()
    )
    sections = []
    for group in GROUPS:
        names = [
            f.name
            for f in fields
            if (f.metadata["group"] == group and group in groups and f.name not in hidden)
            or (f.metadata["group"] == group and f.name in extra)
        ]
        if names:
            sections.append((group, names))
    listed = [name for _, names in sections for name in names]
    name_width = max(len(n) for n in listed) + 2
    default_width = min(max(len(_shown(defaults[n])) for n in listed), 18)
    width = max(shutil.get_terminal_size((100, 24)).columns, 60)
    indent = 2 + name_width + 2 + default_width + 2
    helps = {f.name: f.metadata["help"] for f in fields}
    lines = [f"usage: yt8m {command} [--flag=value ...]", ""]
    if command in ("eval", "infer") and not everything:
        note = _NOTE.format(", --".join(FROM_CHECKPOINT))
        lines += [*textwrap.wrap(note, width), ""]
    for group, names in sections:
        lines.append(f"{group} flags:")
        for name in names:
            head = f"  {'--' + name:<{name_width}}  {_shown(defaults[name]):<{default_width}}  "
            wrapped = textwrap.wrap(helps[name], max(width - indent, 30)) or [""]
            if len(head) > indent:  # a long default: the help starts on the next line
                lines += [head.rstrip(), *(" " * indent + w for w in wrapped)]
            else:
                lines += [head + wrapped[0], *(" " * indent + w for w in wrapped[1:])]
        lines.append("")
    if not everything:
        lines += textwrap.wrap(
            "Every flag of the original's train.py, eval.py and inference.py is accepted; "
            f"`yt8m {command} --helpfull` lists them all.",
            width,
        )
    return "\n".join(lines)
