"""Which flags the user gave, and `--help` per command (issue 11, less friction)."""

import dataclasses
import re

import pytest

from yt8m.flags import Flags, parse_flags


def test_the_flags_a_command_line_gave_are_recorded():
    """Issue 11: eval/infer warn only for flags the user typed; prefixes and --noflag count
    under the real name, defaults and COMMAND_DEFAULTS do not."""
    flags = parse_flags(["--max_step=7", "--nogating", "--batch_size", "3"], "infer")
    assert flags.given == {"max_steps", "gating", "batch_size"}
    assert flags.was_given("max_steps") and not flags.was_given("num_readers")
    assert parse_flags([], "infer").given == frozenset()
    assert Flags().was_given("model")  # not parsed: every flag counts as given
    assert parse_flags(["--batch_size=3"]) == parse_flags(
        ["--batch_size=3", "--model=LogisticModel"]
    )


def _help(command, capsys, flag="--help"):
    with pytest.raises(SystemExit) as done:
        parse_flags([flag], command)
    assert done.value.code == 0
    return capsys.readouterr().out


def _listed(text):
    """{flag: (column where its default starts, default)} of a help text."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"  --(\w+)(\s+)(\S+)", line)
        if match:
            rows[match.group(1)] = (match.start(3), match.group(3))
    return rows


def test_help_lists_the_groups_each_command_reads_aligned_with_its_defaults(capsys):
    train_help, eval_help, infer_help = (_help(c, capsys) for c in ("train", "eval", "infer"))
    for text in (train_help, eval_help, infer_help):
        rows = _listed(text)
        assert len({column for column, _ in rows.values()}) == 1, text  # one default column
    train_rows, eval_rows, infer_rows = map(_listed, (train_help, eval_help, infer_help))
    assert "model flags:" in train_help and "netvlad_cluster_size" in train_rows
    assert "model flags:" not in eval_help and "netvlad_cluster_size" not in eval_rows
    for text in (eval_help, infer_help):  # wrapped to the terminal's width
        assert "come from the checkpoint" in " ".join(text.split())
    assert {"eval_data_pattern", "run_once", "top_k", "label_loss"} <= set(eval_rows)
    assert "train_data_pattern" not in eval_rows and "output_file" not in eval_rows
    assert {"input_data_pattern", "output_file", "top_k", "check_point"} <= set(infer_rows)
    assert "run_once" not in infer_rows and "base_learning_rate" not in infer_rows
    assert infer_rows["batch_size"][1] == "8192" and train_rows["batch_size"][1] == "1024"
    assert "--helpfull" in eval_help
    everything = _listed(_help("eval", capsys, "--helpfull"))
    assert set(everything) == {f.name for f in dataclasses.fields(Flags)}
