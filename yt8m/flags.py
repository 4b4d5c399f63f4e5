"""One table of every flag, shared by `train`, `eval` and `infer`.

The original system defined its flags with TensorFlow's gflags-style parser in
several files; the seed's command lines rely on that parser's spelling:

* ``--name=value`` and ``--name value``;
* booleans as bare ``--flag``, ``--noflag`` or ``--flag=True/False`` (also
  ``true``/``false``/``1``/``0``/``t``/``f``);
* unambiguous prefixes of a flag name (the seed writes ``--max_step`` for
  ``--max_steps``).

Every command accepts every flag of the table, so any of the seed's command lines
can be given to any of the three commands (the seed's inference commands carry
training flags such as ``--base_learning_rate``; they are accepted and unused).
A misspelt flag is an error that names the closest real one.

Usage::

    flags = parse_flags(sys.argv[1:], command="train")
    flags.batch_size            # 1024 unless given
    flags.feature_list()        # [("rgb", 1024), ("audio", 128)]
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from yt8m.errors import YT8MError

# Groups, in the order `--help` prints them. A flag of group "model" changes the
# architecture: inference compares them with the checkpoint's own flag table.
GROUPS = ("data", "model", "train", "eval", "inference", "system")


def _flag(default: Any, help: str, group: str) -> Any:
    return field(default=default, metadata={"help": help, "group": group})


@dataclass
class Flags:
    """Every flag of the original's train.py, eval.py, inference.py,
    frame_level_models.py and video_level_models.py, plus this project's own
    (marked "new" in their help). Defaults are the original's."""

    # The names of the flags a command line gave (`parse_flags` sets it; `was_given`).
    # Not a flag: outside the table, `to_dict` and comparisons. None: not parsed from a
    # command line, every flag counts as given.
    given: ClassVar[frozenset[str] | None] = None

    # ---- data -------------------------------------------------------------
    train_dir: str = _flag("/tmp/yt8m_model/", "Directory of checkpoints and logs.", "data")
    train_data_pattern: str = _flag("", "Glob of the training TFRecords.", "data")
    eval_data_pattern: str = _flag("", "Glob of the evaluation TFRecords.", "data")
    input_data_pattern: str = _flag("", "Glob of the TFRecords to predict.", "data")
    feature_names: str = _flag(
        "",
        "Comma-separated features. Empty: 'rgb,audio' for frame-level data, "
        "'mean_rgb,mean_audio' for video-level data.",
        "data",
    )
    feature_sizes: str = _flag("", "Comma-separated feature sizes. Empty: '1024,128'.", "data")
    frame_features: bool = _flag(False, "Frame-level (SequenceExample) input.", "data")
    num_classes: int = _flag(4716, "Vocabulary size (new; 4716 in 2017, 3862 in 2018).", "data")
    max_frames: int = _flag(300, "Frames kept per video (new; the original's 300).", "data")
    num_readers: int = _flag(
        8, "Reader processes (capped at the CPU count; 0 reads in the main process).", "data"
    )
    skip_corrupt_records: bool = _flag(
        False, "Skip and count corrupt records instead of stopping (new).", "data"
    )

    # ---- model ------------------------------------------------------------
    model: str = _flag("LogisticModel", "Model class name.", "model")
    iterations: int = _flag(30, "Frames sampled per video.", "model")
    sample_random_frames: bool = _flag(
        True, "Sample random frames (True) or a random sequence (False).", "model"
    )
    deterministic_sampling: bool = _flag(
        False, "Evenly spaced frames in eval/inference instead of random ones (new).", "eval"
    )
    gating_remove_diag: bool = _flag(False, "Remove the diagonal of the gating.", "model")
    lightvlad: bool = _flag(False, "NetRVLAD instead of NetVLAD.", "model")
    vlagd: bool = _flag(False, "NetVLAGD instead of NetVLAD.", "model")
    dbof_add_batch_norm: bool = _flag(True, "Batch norm in the DBoF models.", "model")
    dbof_cluster_size: int = _flag(16384, "DBoF clusters.", "model")
    dbof_hidden_size: int = _flag(2048, "DBoF hidden units.", "model")
    dbof_relu: bool = _flag(True, "ReLU after the DBoF hidden layer.", "model")
    dbof_var_features: int = _flag(0, "Variance features on top of DBoF.", "model")
    dbof_activation: str = _flag("relu", "DBoF activation: relu or glu.", "model")
    dbof_pooling_method: str = _flag("max", "DBoF pooling: max or average.", "model")
    softdbof_maxpool: bool = _flag(False, "Add a max-pool branch to Soft-DBoF.", "model")
    netvlad_cluster_size: int = _flag(64, "NetVLAD clusters.", "model")
    netvlad_hidden_size: int = _flag(1024, "NetVLAD hidden units.", "model")
    netvlad_hidden_size_video: int = _flag(1024, "NetVLAD video hidden units.", "model")
    netvlad_hidden_size_audio: int = _flag(64, "NetVLAD audio hidden units.", "model")
    netvlad_relu: bool = _flag(True, "BN + ReLU6 after the NetVLAD hidden layer.", "model")
    netvlad_dimred: int = _flag(-1, "NetVLAD output dimension reduction.", "model")
    gatednetvlad_dimred: int = _flag(1024, "Gated NetVLAD dimension reduction.", "model")
    netvlad_add_batch_norm: bool = _flag(True, "Batch norm in the NetVLAD models.", "model")
    gating: bool = _flag(False, "Context Gating after the hidden layer.", "model")
    hidden_size: int = _flag(1024, "Hidden size of the basic models.", "model")
    fv_cluster_size: int = _flag(64, "NetFV clusters.", "model")
    fv_hidden_size: int = _flag(2048, "NetFV hidden units.", "model")
    fv_relu: bool = _flag(True, "BN + ReLU6 after the NetFV hidden layer.", "model")
    fv_couple_weights: bool = _flag(True, "Couple the NetFV cluster weights.", "model")
    fv_coupling_factor: float = _flag(0.01, "NetFV coupling factor.", "model")
    fc_dimred: bool = _flag(True, "FC dimension reduction after pooling.", "model")
    video_level_classifier_model: str = _flag("MoeModel", "Classifier on pooled features.", "model")
    lstm_cells: int = _flag(1024, "LSTM cells per layer.", "model")
    lstm_layers: int = _flag(2, "LSTM layers.", "model")
    lstm_cells_video: int = _flag(1024, "LSTM cells (video).", "model")
    lstm_cells_audio: int = _flag(128, "LSTM cells (audio).", "model")
    lstm_random_sequence: bool = _flag(False, "LSTM reads random frames.", "model")
    lstm_backward: bool = _flag(False, "LSTM reads backwards.", "model")
    gru_cells: int = _flag(1024, "GRU cells per layer.", "model")
    gru_cells_video: int = _flag(1024, "GRU cells (video).", "model")
    gru_cells_audio: int = _flag(128, "GRU cells (audio).", "model")
    gru_layers: int = _flag(2, "GRU layers.", "model")
    gru_random_sequence: bool = _flag(False, "GRU reads random frames.", "model")
    gru_backward: bool = _flag(False, "GRU reads backwards.", "model")
    moe_num_mixtures: int = _flag(2, "MoE experts per class (without the dummy one).", "model")
    moe_l2: float = _flag(1e-8, "L2 penalty on the MoE weights.", "model")
    moe_low_rank_gating: int = _flag(-1, "Low-rank MoE gating (-1: full rank).", "model")
    moe_prob_gating: bool = _flag(False, "Gate the MoE probabilities.", "model")
    moe_prob_gating_input: str = _flag(
        "prob", "Input of the probability gating: prob or input.", "model"
    )

    # ---- train ------------------------------------------------------------
    start_new_model: bool = _flag(False, "Start over instead of resuming.", "train")
    batch_size: int = _flag(1024, "Videos per batch (inference default: 8192).", "train")
    label_loss: str = _flag("CrossEntropyLoss", "Loss class name.", "train")
    alpha: float = _flag(0.5, "Weight of the positive term of CrossEntropyLoss.", "train")
    regularization_penalty: float = _flag(1.0, "Weight of the regularization loss.", "train")
    base_learning_rate: float = _flag(0.001, "Initial learning rate.", "train")
    learning_rate_decay: float = _flag(0.9, "Decay factor per decay period.", "train")
    learning_rate_decay_examples: float = _flag(4000000, "Examples per decay period.", "train")
    num_epochs: int = _flag(15, "Passes over the training data.", "train")
    max_steps: int | None = _flag(None, "Stop after this many steps.", "train")
    export_model_steps: int = _flag(10000, "Steps between checkpoints.", "train")
    save_checkpoint_secs: float = _flag(900.0, "Seconds between checkpoints (new).", "train")
    keep_checkpoints: int = _flag(
        5,
        "Newest checkpoints kept (new; 0 keeps all). A full-size one is about 4 GB (gated "
        "NetVLAD: 333 M float32 parameters and Adam's two moments; 5.3 GB with --ema_decay): "
        "five, about 20 GB.",
        "train",
    )
    optimizer: str = _flag("AdamOptimizer", "Optimizer class name.", "train")
    clip_gradient_norm: float = _flag(1.0, "Clip each gradient tensor to this L2 norm.", "train")
    log_device_placement: bool = _flag(False, "Accepted for compatibility; no effect.", "train")
    seed: int = _flag(0, "Random seed (new).", "train")
    recalibrate_batch_norm: int = _flag(
        0,
        "At the end, re-estimate batch-norm statistics on this many training batches "
        "(new; 0, the default, keeps the original's decayed statistics).",
        "train",
    )

    # ---- eval -------------------------------------------------------------
    run_once: bool = _flag(False, "Evaluate once instead of watching train_dir.", "eval")
    top_k: int = _flag(20, "Predictions kept per video.", "eval")
    check_point: int = _flag(-1, "Checkpoint step to load (-1: latest).", "eval")
    eval_poll_secs: float = _flag(60.0, "Seconds between looks for new checkpoints (new).", "eval")
    # ---- batch-norm statistics of eval and infer (yt8m/batchnorm.py) ----
    batch_norm_statistics: str = _flag(
        "moving",
        "Batch-norm statistics in eval/infer: moving (the moving averages, as the original's "
        "eval.py) or batch (each predicted batch's own, as the original's inference.py) (new).",
        "eval",
    )

    # ---- inference --------------------------------------------------------
    output_file: str = _flag("", "Submission CSV to write (.gz compresses).", "inference")

    # ---- the 2019 segment task (yt8m.segments; the starter's flag names) ------
    segment_labels: bool = _flag(
        False,
        "2019 segments instead of videos: train on the rated segments, infer and evaluate "
        "segments (the starter's; needs --frame_features).",
        "data",
    )
    segment_size: int = _flag(5, "Frames per segment (--segment_labels).", "data")
    segment_max_pred: int = _flag(
        100000, "Segments kept per class by segment inference; the K of MAP@K.", "inference"
    )
    segment_label_ids_file: str = _flag(
        "",
        "Class whitelist of segment inference: the starter's segment_label_ids.csv "
        "(header 'Index'); --segment_label_ids works too.",
        "inference",
    )
    start_from: str = _flag(
        "",
        "Fine-tune (new): a train_dir without checkpoints starts from this train_dir's "
        "latest checkpoint (or this checkpoint file) with its model flags; the learning "
        "rate schedule starts over.",
        "train",
    )

    # ---- system -----------------------------------------------------------
    device: str = _flag(
        "auto", "cpu, cuda, cuda:N or auto; under torchrun GPU N + LOCAL_RANK (new).", "system"
    )
    amp: bool = _flag(
        False, "bfloat16 autocast of the forward pass; float32 probabilities (new).", "system"
    )
    compile: bool = _flag(False, "torch.compile the model (new).", "system")
    progress: bool = _flag(True, "Show progress bars (new).", "system")

    # ---- the 2018 methods (successors.md §3): NeXtVLAD and its mixture (linrongc's flags),
    # EMA of the weights, distillation, and the flags of linrongc's scripts ----
    nextvlad_cluster_size: int = _flag(64, "NeXtVLAD clusters (audio: half).", "model")
    nextvlad_hidden_size: int = _flag(1024, "NeXtVLAD hidden units.", "model")
    groups: int = _flag(8, "NeXtVLAD groups (audio: half).", "model")
    expansion: int = _flag(2, "NeXtVLAD expansion of the frame features.", "model")
    drop_rate: float = _flag(0.5, "NeXtVLAD dropout before the hidden layer.", "model")
    gating_reduction: int = _flag(8, "NeXtVLAD SE context gating reduction.", "model")
    mix_number: int = _flag(3, "MixNeXtVladModel branches.", "model")
    cl_temperature: float = _flag(2.0, "MixNeXtVladModel distillation temperature.", "model")
    cl_lambda: float = _flag(1.0, "MixNeXtVladModel distillation weight.", "model")
    l2_penalty: float = _flag(
        1e-8, "L2 penalty of the NeXtVLAD models' classifier (weights and biases).", "model"
    )
    nextvlad_input: str = _flag(
        "pca",
        "NeXtVLAD input: pca (linrongc's offset and PCA-eigenvalue scale) or willow "
        "(L2-normalised frames) (new).",
        "model",
    )
    ema_decay: float = _flag(
        0.0, "Keep an exponential moving average of the weights with this decay (new; 0: off).",
        "train",
    )  # fmt: skip
    use_ema: bool = _flag(
        True, "Predict with a checkpoint's EMA weights when it has them (new).", "eval"
    )
    distill_from: str = _flag(
        "",
        "Comma-separated teachers: prediction files with every class, or train_dirs (new).",
        "train",
    )
    distill_weight: float = _flag(
        0.5, "Weight of the teachers' soft targets in the label loss (new).", "train"
    )
    distill_temperature: float = _flag(
        1.0, "Temperature of the soft targets and the student (new).", "train"
    )
    num_gpu: int = _flag(1, "Accepted for linrongc's scripts; use torchrun instead.", "system")
    output_model_tgz: str = _flag(
        "", "Also bundle the checkpoint used into this .tgz (a train_dir once extracted).",
        "inference",
    )  # fmt: skip

    # -----------------------------------------------------------------------
    def feature_list(self) -> list[tuple[str, int]]:
        """The ``(name, size)`` pairs of ``--feature_names``/``--feature_sizes``."""
        names = self.feature_names or (
            "rgb,audio" if self.frame_features else "mean_rgb,mean_audio"
        )
        sizes = self.feature_sizes or "1024,128"
        name_list = [n.strip() for n in names.split(",") if n.strip()]
        try:
            size_list = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            raise FlagError(f"--feature_sizes={sizes!r} must be comma-separated integers") from None
        if len(name_list) != len(size_list):
            raise FlagError(
                f"--feature_names has {len(name_list)} entries ({names!r}) but "
                f"--feature_sizes has {len(size_list)} ({sizes!r}); give one size per name"
            )
        return list(zip(name_list, size_list, strict=True))

    def was_given(self, name: str) -> bool:
        """Whether the command line gave flag `name` (True for flags not parsed from one)."""
        return self.given is None or name in self.given

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Flags:
        """Rebuild from `to_dict` output; names this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def model_differences(self, other: Flags) -> list[tuple[str, Any, Any]]:
        """``(name, self value, other value)`` for every model flag that differs."""
        return [
            (f.name, getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
            if f.metadata["group"] == "model" and getattr(self, f.name) != getattr(other, f.name)
        ]


class FlagError(YT8MError, ValueError):
    """A command line that cannot be parsed; the message says what to type instead."""


# Defaults that differ between the original's three programs.
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {},
    "eval": {"num_readers": 4},
    "infer": {"batch_size": 8192, "num_readers": 4},
}

_TRUE = {"true", "t", "1", "yes"}
_FALSE = {"false", "f", "0", "no"}


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Flags)}


def _is_bool(f: dataclasses.Field) -> bool:
    return f.type in ("bool", bool)


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if kind.startswith("int"):
            if kind.endswith("None") and raw.lower() in ("", "none"):
                return None
            return int(float(raw)) if "e" in raw.lower() else int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        expected = {"bool": "True or False", "float": "a number"}.get(kind, "an integer")
        raise FlagError(f"--{f.name}={raw!r}: expected {expected}") from None


def _resolve(name: str, fields: dict[str, dataclasses.Field]) -> tuple[str, bool | None]:
    """Map a written flag name to ``(real name, forced bool)``.

    Exact names win; then ``no``-prefixed booleans; then unambiguous prefixes.
    """
    if name in fields:
        return name, None
    if name.startswith("no") and name[2:] in fields and _is_bool(fields[name[2:]]):
        return name[2:], False
    candidates = {n: None for n in fields if n.startswith(name)}
    candidates.update(
        {n: False for n in fields if _is_bool(fields[n]) and ("no" + n).startswith(name)}
    )
    if len(candidates) == 1:
        real, forced = next(iter(candidates.items()))
        return real, forced
    if len(candidates) > 1:
        listed = ", ".join("--" + n for n in sorted(candidates))
        raise FlagError(f"--{name} is ambiguous: it could be {listed}")
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
    hint = f"; did you mean --{close[0]}?" if close else "; see --help for the list"
    raise FlagError(f"unknown flag --{name}{hint}")


def parse_flags(argv: list[str], command: str = "train") -> Flags:
    """Parse a command line in the original's spelling into a `Flags`.

    Raises `FlagError` for unknown, ambiguous or ill-typed flags and for
    positional arguments. ``-h``/``--help`` prints the command's flags (``--helpfull``:
    all of them) and exits. The result's `given` holds the names of the flags written.
    """
    fields = _fields()
    values: dict[str, Any] = dict(COMMAND_DEFAULTS.get(command, {}))
    given: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help", "-help", "--helpfull"):
            from yt8m.flag_help import help_text

            print(help_text(command, everything=arg == "--helpfull"))
            sys.exit(0)
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected argument {arg!r}: every option is written --name=value")
        body = arg.lstrip("-")
        name, eq, raw = body.partition("=")
        real, forced = _resolve(name, fields)
        given.add(real)
        f = fields[real]
        if forced is not None:  # --noflag
            if eq:
                raise FlagError(f"--{name} takes no value (it means --{real}=False)")
            values[real] = False
        elif eq:
            values[real] = _convert(f, raw)
        elif _is_bool(f):
            values[real] = True
        else:
            if i >= len(argv):
                raise FlagError(f"--{real} needs a value: --{real}=VALUE")
            values[real] = _convert(f, argv[i])
            i += 1
    flags = Flags(**values)
    flags.given = frozenset(given)
    for name in ("train_dir", "output_file"):  # written locally; remote paths are read only
        if "://" in getattr(flags, name):
            raise FlagError(
                f"--{name}={getattr(flags, name)}: remote paths are read (data patterns), never "
                "written; give a local path and copy the result (e.g. gcloud storage cp)"
            )
    return flags
