"""Model names -> classes, and `build_model(flags)`: the one place that reads model flags.

Usage::

    model = build_model(parse_flags(argv))      # e.g. --model=NetVLADModelLF ...
    with torch.device("meta"):                  # full size, no memory
        count_trainable_parameters(build_model(flags))
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from yt8m.errors import YT8MError
from yt8m.flags import Flags
from yt8m.models import frame_level, nextvlad, video_level
from yt8m.models.classifiers import ClassifierSpec
from yt8m.models.layers import count_trainable_parameters

__all__ = ["MODELS", "ModelError", "build_model", "count_trainable_parameters"]


class ModelError(YT8MError, ValueError):
    """A `--model` that does not exist or does not fit the data."""


FRAME_LEVEL: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        frame_level.NetVLADModelLF,
        frame_level.NetFVModelLF,
        frame_level.GatedDbofModelLF,
        frame_level.SoftDbofModelLF,
        frame_level.DbofModelLF,
        frame_level.LstmModel,
        frame_level.GruModel,
        frame_level.DbofModel,
        frame_level.FrameLevelLogisticModel,
        nextvlad.NeXtVLADModel,
        nextvlad.MixNeXtVladModel,
    )
}
VIDEO_LEVEL: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (video_level.LogisticModel, video_level.MoeModel)
}
MODELS: dict[str, type[nn.Module]] = {**FRAME_LEVEL, **VIDEO_LEVEL}


def _classifier(f: Flags) -> ClassifierSpec:
    return ClassifierSpec(
        name=f.video_level_classifier_model,
        num_mixtures=f.moe_num_mixtures,
        l2_penalty=f.moe_l2,
        low_rank_gating=f.moe_low_rank_gating,
        prob_gating=f.moe_prob_gating,
        prob_gating_input=f.moe_prob_gating_input,
        remove_diag=f.gating_remove_diag,
    )


def _sampling(f: Flags) -> dict:
    return {"iterations": f.iterations, "sample_random_frames": f.sample_random_frames}


def _netvlad(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    variant = "lightvlad" if f.lightvlad else "vlagd" if f.vlagd else "netvlad"
    return frame_level.NetVLADModelLF(
        n, sizes, **_sampling(f), cluster_size=f.netvlad_cluster_size,
        hidden_size=f.netvlad_hidden_size, add_batch_norm=f.netvlad_add_batch_norm,
        relu=f.netvlad_relu, gating=f.gating, gating_remove_diag=f.gating_remove_diag,
        variant=variant, classifier=_classifier(f),
    )  # fmt: skip


def _netfv(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    # The original's NetFV reads --netvlad_add_batch_norm.
    return frame_level.NetFVModelLF(
        n, sizes, **_sampling(f), cluster_size=f.fv_cluster_size, hidden_size=f.fv_hidden_size,
        add_batch_norm=f.netvlad_add_batch_norm, relu=f.fv_relu, gating=f.gating,
        couple_weights=f.fv_couple_weights, coupling_factor=f.fv_coupling_factor,
        classifier=_classifier(f),
    )  # fmt: skip


def _soft_dbof(cls: type) -> Callable[[Flags, int, list[int]], nn.Module]:
    def build(f: Flags, n: int, sizes: list[int]) -> nn.Module:
        return cls(
            n, sizes, **_sampling(f), cluster_size=f.dbof_cluster_size,
            hidden_size=f.dbof_hidden_size, add_batch_norm=f.dbof_add_batch_norm,
            relu=f.dbof_relu, fc_dimred=f.fc_dimred, max_pool=f.softdbof_maxpool,
            classifier=_classifier(f),
        )  # fmt: skip

    return build


def _dbof_lf(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    return frame_level.DbofModelLF(
        n, sizes, **_sampling(f), cluster_size=f.dbof_cluster_size,
        hidden_size=f.dbof_hidden_size, add_batch_norm=f.dbof_add_batch_norm,
        relu=f.dbof_relu, activation=f.dbof_activation, classifier=_classifier(f),
    )  # fmt: skip


def _dbof(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    return frame_level.DbofModel(
        n, sum(sizes), **_sampling(f), cluster_size=f.dbof_cluster_size,
        hidden_size=f.dbof_hidden_size, add_batch_norm=f.dbof_add_batch_norm,
        pooling=f.dbof_pooling_method, classifier=_classifier(f),
    )  # fmt: skip


def _lstm(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    return frame_level.LstmModel(
        n, sum(sizes), cells=f.lstm_cells, layers=f.lstm_layers, iterations=f.iterations,
        random_frames=f.lstm_random_sequence, backward=f.lstm_backward,
        classifier=_classifier(f),
    )  # fmt: skip


def _gru(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    return frame_level.GruModel(
        n, sum(sizes), cells=f.gru_cells, layers=f.gru_layers, iterations=f.iterations,
        random_frames=f.gru_random_sequence, backward=f.gru_backward,
        classifier=_classifier(f),
    )  # fmt: skip


def _nextvlad_settings(f: Flags) -> dict:
    return {
        "cluster_size": f.nextvlad_cluster_size, "hidden_size": f.nextvlad_hidden_size,
        "groups": f.groups, "expansion": f.expansion, "drop_rate": f.drop_rate,
        "gating_reduction": f.gating_reduction, "l2_penalty": f.l2_penalty,
        "classifier": ClassifierSpec(f.video_level_classifier_model, f.moe_num_mixtures),
        "transform": f.nextvlad_input,
    }  # fmt: skip


def _mix_nextvlad(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    return nextvlad.MixNeXtVladModel(
        n, sizes, mix_number=f.mix_number, cl_temperature=f.cl_temperature,
        cl_lambda=f.cl_lambda, **_nextvlad_settings(f),
    )  # fmt: skip


def _moe(f: Flags, n: int, sizes: list[int]) -> nn.Module:
    c = _classifier(f)
    return video_level.MoeModel(
        n, sum(sizes), num_mixtures=c.num_mixtures, l2_penalty=c.l2_penalty,
        low_rank_gating=c.low_rank_gating, prob_gating=c.prob_gating,
        prob_gating_input=c.prob_gating_input, remove_diag=c.remove_diag,
    )  # fmt: skip


_BUILDERS: dict[str, Callable[[Flags, int, list[int]], nn.Module]] = {
    "NetVLADModelLF": _netvlad,
    "NetFVModelLF": _netfv,
    "GatedDbofModelLF": _soft_dbof(frame_level.GatedDbofModelLF),
    "SoftDbofModelLF": _soft_dbof(frame_level.SoftDbofModelLF),
    "DbofModelLF": _dbof_lf,
    "LstmModel": _lstm,
    "GruModel": _gru,
    "DbofModel": _dbof,
    "FrameLevelLogisticModel": lambda f, n, sizes: frame_level.FrameLevelLogisticModel(
        n, sum(sizes)
    ),
    "NeXtVLADModel": lambda f, n, sizes: nextvlad.NeXtVLADModel(n, sizes, **_nextvlad_settings(f)),
    "MixNeXtVladModel": _mix_nextvlad,
    "LogisticModel": lambda f, n, sizes: video_level.LogisticModel(n, sum(sizes)),
    "MoeModel": _moe,
}


def build_model(flags: Flags) -> nn.Module:
    """The `--model` described by `flags`, with fresh weights (on the current default
    device: build under ``torch.device("meta")`` to size a model without memory)."""
    if flags.model not in MODELS:
        raise ModelError(
            f"--model={flags.model!r} is not a model; choose one of {', '.join(sorted(MODELS))}"
        )
    frame_model = flags.model in FRAME_LEVEL
    if frame_model != flags.frame_features:
        kind, needed = ("frame-level", "True") if frame_model else ("video-level", "False")
        raise ModelError(
            f"--model={flags.model} is a {kind} model: it needs --frame_features={needed}"
        )
    sizes = [size for _, size in flags.feature_list()]
    model = _BUILDERS[flags.model](flags, flags.num_classes, sizes)
    model.deterministic_sampling = flags.deterministic_sampling
    return model
