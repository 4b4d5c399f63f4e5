"""The README's model table gives the parameter counts of the code, not typed-in numbers."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from yt8m.flags import Flags, parse_flags
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


def test_the_checkpoint_size_stated_is_the_seed_models():
    """Issue 11: the README and `--keep_checkpoints`' help say a full-size checkpoint is about
    4 GB and five are kept. The largest seed model (gated NetVLAD, fidelity.md §4) with
    Adam's two moments holds three float32 copies of its weights; bench/checkpoint.py
    measured the file (4.00 GB, bench/RESULTS.md)."""
    counts = _table_counts()
    gigabytes = 3 * 4 * max(counts) / 1e9
    assert round(gigabytes) == 4
    with_ema = 4 * 4 * max(counts) / 1e9  # --ema_decay keeps a fourth copy
    text = " ".join(README.read_text().split())
    assert "A full-size checkpoint is about 4 GB" in text and "five newest are kept" in text
    assert f"about {with_ema:.1f} GB with `--ema_decay`" in text
    (field,) = [f for f in dataclasses.fields(Flags) if f.name == "keep_checkpoints"]
    assert field.default == 5
    described = " ".join(field.metadata["help"].split())
    assert "about 4 GB" in described and "five, about 20 GB" in described
    assert f"{with_ema:.1f} GB with --ema_decay" in described
