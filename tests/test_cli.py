"""The `yt8m` command itself: the command list, --version, errors as one line."""

import re

from yt8m import __version__
from yt8m.cli import main


def test_version_names_this_package_and_torch(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert re.match(rf"yt8m {re.escape(__version__)} \(torch \S+, Python \S+\)$", out.strip())


def test_usage_lists_every_command_and_points_at_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("synth", "train", "eval", "infer", "average", "ensemble", "demo"):
        assert f"  {command} " in out
    assert "--help" in out and "--version" in out
