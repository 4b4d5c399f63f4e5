"""The README's model table gives the parameter counts of the code, not typed-in numbers."""

import re
from pathlib import Path

import pytest
import torch

from yt8m.flags import parse_flags
from yt8m.models import build_model
from yt8m.models.layers import count_trainable_parameters
from yt8m.seed_models import SEED_MODELS

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_counts() -> list[int]:
    rows = [
        ln for ln in README.read_text().splitlines() if re.match(r"\| (Gated |Soft|GRU|LSTM)", ln)
    ]
    return [int(row.split("|")[3].strip().replace(",", "")) for row in rows]


@pytest.mark.parametrize("index", range(len(SEED_MODELS)))
def test_parameter_column_equals_the_built_model(index):
    counts = _table_counts()
    assert len(counts) == len(SEED_MODELS)
    with torch.device("meta"):
        model = build_model(parse_flags(SEED_MODELS[index].training_argv()))
    assert counts[index] == count_trainable_parameters(model)


def test_the_2018_table_gives_the_built_models_counts():
    """successors.md §3: the published NeXtVLAD and mixture, 2018 vocabulary."""
    from tests.linrongc import MIXTURE_SCRIPT, NEXTVLAD_SCRIPT, training_argv

    rows = {
        row.split("|")[1].strip(): int(row.split("|")[3].strip().replace(",", ""))
        for row in README.read_text().splitlines()
        if re.match(r"\| (NeXtVLAD|MixNeXtVlad) \|", row)
    }
    for name, script in (("NeXtVLAD", NEXTVLAD_SCRIPT), ("MixNeXtVlad", MIXTURE_SCRIPT)):
        with torch.device("meta"):
            model = build_model(parse_flags([*training_argv(script), "--num_classes=3862"]))
        assert rows[name] == count_trainable_parameters(model)
