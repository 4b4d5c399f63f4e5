"""The embedded table of seed models says what the seed README's commands say."""

import pytest

from tests.seed import flag_value, training_commands
from yt8m.flags import parse_flags
from yt8m.seed_models import SEED_MODELS


def test_same_seven_models_in_the_same_order():
    assert [m.train_dir for m in SEED_MODELS] == [
        flag_value(argv, "train_dir") for argv in training_commands()
    ]


@pytest.mark.parametrize("index", range(7))
def test_flags_equal_the_seed_command(index):
    seed_argv = training_commands()[index]
    model = SEED_MODELS[index]
    from_seed = parse_flags(seed_argv)
    from_table = parse_flags(
        [*model.training_argv(), f"--train_dir={model.train_dir}", f"--max_steps={model.max_steps}"]
    )
    from_table.train_data_pattern = from_seed.train_data_pattern
    assert from_table == from_seed
