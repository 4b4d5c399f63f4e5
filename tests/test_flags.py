"""The shared flag table parses the seed's command lines as the original's parser did."""

import pytest

from tests.seed import flag_value, inference_commands, training_commands
from yt8m.flags import FlagError, Flags, parse_flags


def test_seed_has_seven_training_and_seven_inference_commands():
    assert len(training_commands()) == 7
    assert len(inference_commands()) == 7


@pytest.mark.parametrize("argv", training_commands(), ids=lambda a: flag_value(a, "train_dir"))
def test_every_training_command_parses(argv):
    flags = parse_flags(argv, "train")
    assert flags.train_dir == flag_value(argv, "train_dir")
    assert flags.max_steps == int(flag_value(argv, "max_step"))  # prefix of --max_steps
    assert flags.frame_features is True
    assert flags.feature_list() == [("rgb", 1024), ("audio", 128)]


@pytest.mark.parametrize("argv", inference_commands(), ids=lambda a: flag_value(a, "train_dir"))
@pytest.mark.parametrize("command", ["train", "eval", "infer"])
def test_every_inference_command_parses_in_every_command(argv, command):
    flags = parse_flags(argv, command)
    assert flags.top_k == 50
    assert flags.output_file == flag_value(argv, "output_file")


def test_boolean_spellings():
    assert parse_flags(["--gating"]).gating is True
    assert parse_flags(["--gating=False"]).gating is False
    assert parse_flags(["--gating=true"]).gating is True
    assert parse_flags(["--nosample_random_frames"]).sample_random_frames is False
    assert parse_flags(["--netvlad_relu=0"]).netvlad_relu is False


def test_value_spellings_and_command_defaults():
    assert parse_flags(["--batch_size", "80"]).batch_size == 80
    assert parse_flags(["--learning_rate_decay_examples=4e6"]).learning_rate_decay_examples == 4e6
    assert parse_flags([], "infer").batch_size == 8192
    assert parse_flags([], "train").batch_size == 1024
    assert parse_flags([]).max_steps is None


def test_misspelt_flag_suggests_the_closest():
    with pytest.raises(FlagError, match="did you mean --netvlad_cluster_size"):
        parse_flags(["--netvlad_clustr_size=3"])


def test_ambiguous_prefix_lists_candidates():
    with pytest.raises(FlagError, match="ambiguous.*--netvlad_hidden_size"):
        parse_flags(["--netvlad_hidden=3"])


def test_bad_values_and_positionals_are_errors():
    with pytest.raises(FlagError, match="batch_size.*integer"):
        parse_flags(["--batch_size=eighty"])
    with pytest.raises(FlagError, match="True or False"):
        parse_flags(["--gating=maybe"])
    with pytest.raises(FlagError, match="unexpected argument"):
        parse_flags(["train.py"])


def test_feature_sizes_must_match_names():
    with pytest.raises(FlagError, match="one size per name"):
        parse_flags(["--feature_names=rgb,audio", "--feature_sizes=1024"]).feature_list()
    assert Flags().feature_list() == [("mean_rgb", 1024), ("mean_audio", 128)]


def test_round_trip_and_model_differences():
    flags = parse_flags(["--model=NetVLADModelLF", "--netvlad_cluster_size=8", "--batch_size=3"])
    again = Flags.from_dict(flags.to_dict() | {"a_flag_of_the_future": 1})
    assert again == flags
    other = parse_flags(["--model=NetVLADModelLF", "--netvlad_cluster_size=16", "--batch_size=5"])
    assert flags.model_differences(other) == [("netvlad_cluster_size", 8, 16)]
