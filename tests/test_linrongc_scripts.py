"""linrongc/youtube-8m's scripts (successors.md §3) run as written with the data paths
replaced: bash expands `tests/data/linrongc/*.sh` (its own word splitting, line
continuations and ``${parameters}``) with a `python` that records each command line;
every line parses, the training line builds the published model at its full size, and
the three commands, at tiny sizes, train, evaluate and write a submission and a model
archive."""

import logging
import tarfile
from pathlib import Path

import pytest
import torch

from tests.linrongc import MIXTURE_SCRIPT, NEXTVLAD_SCRIPT, expand
from tests.test_models_nextvlad import mixture_count, nextvlad_count
from yt8m.data.synthetic import write_dataset
from yt8m.distributed import Process
from yt8m.evaluate import evaluate
from yt8m.flags import parse_flags
from yt8m.inference import infer
from yt8m.linrongc import note_num_gpu
from yt8m.models import build_model, count_trainable_parameters
from yt8m.train import train

# The tiny version: sizes and lengths only (appended flags win); eval and infer take the
# feature sizes from the checkpoint, as linrongc's lines give none.
TINY = {
    "train": [
        "--nextvlad_cluster_size=4", "--nextvlad_hidden_size=16", "--gating_reduction=4",
        "--num_classes=12", "--max_frames=10", "--batch_size=4", "--max_steps=2",
        "--feature_sizes=32,16",
    ],
    "eval": ["--max_frames=10"],
    "infer": ["--max_frames=10"],
}  # fmt: skip
QUIET = ["--num_readers=0", "--progress=False"]


def layout(root: Path, mixture: bool) -> dict[str, str]:
    """Tiny 32+16 data where each script looks for it; returns its path variables."""
    patterns = write_dataset(
        root / "synth", videos={"train": 8, "validate": 4, "test": 3}, shards=1, classes=12,
        frames=(2, 10), feature_sizes=(32, 16), levels=("frame",),
    )["frame"]  # fmt: skip
    frame = Path(patterns["train"]).parent
    folders = {"train": root / "frame" / "train", "validate": root / "val", "test": root / "test"}
    if mixture:  # ${datapath}/[tv][ar]*/[tv]*.tfrecord: the train and validate folders
        folders["validate"] = root / "frame" / "validate"
    for split, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}0000.tfrecord").symlink_to(frame / f"{split}0000.tfrecord")
    return {
        "datapath": str(root / "frame" if mixture else folders["train"]),
        "eval_path": str(folders["validate"]),
        "test_path": str(folders["test"]),
    }


@pytest.mark.parametrize(
    ("script", "count", "mixture"),
    [
        (NEXTVLAD_SCRIPT, nextvlad_count(4716), False),
        (MIXTURE_SCRIPT, mixture_count(4716), True),
    ],
    ids=["nextvlad", "mixture"],
)
def test_the_scripts_parse_build_the_model_and_run_at_tiny_size(
    script, count, mixture, tmp_path, monkeypatch, caplog
):
    paths = layout(tmp_path / "data", mixture)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    commands = expand(script, paths, work)
    assert [name for name, _ in commands] == ["train", "eval", "infer"]
    flags = {name: parse_flags(argv, name) for name, argv in commands}
    with torch.device("meta"):  # the published model, as the script gives it
        model = build_model(flags["train"])
    # The scripts give no --num_classes: the default vocabulary (2017's 4716) is used.
    assert count_trainable_parameters(model) == count
    assert flags["train"].l2_penalty == 1e-5 and flags["train"].num_gpu == 2
    assert flags["train"].max_steps == 700000

    caplog.set_level(logging.WARNING)
    argv = dict(commands)
    train(parse_flags([*argv["train"], *TINY["train"], *QUIET], "train"))
    assert [r.message for r in caplog.records].count(
        "--num_gpu=2 has no effect: this process drives one device (cpu); for N GPUs start "
        "N processes: torchrun --nproc_per_node=N -m yt8m train ..."
    ) == 1
    (result,) = evaluate(parse_flags([*argv["eval"], *TINY["eval"], *QUIET], "eval"))
    assert result["step"] == 2 and result["num_videos"] == 4
    output = infer(parse_flags([*argv["infer"], *TINY["infer"], *QUIET], "infer"))
    assert len(output.read_text().splitlines()) == 1 + 3
    with tarfile.open(flags["infer"].output_model_tgz) as tar:
        assert tar.getnames() == ["model.ckpt-2.pt"]


def test_num_gpu_is_noted_once_by_rank_zero_under_torchrun(caplog):
    flags = parse_flags(["--num_gpu=2"])
    cpu = torch.device("cpu")
    caplog.set_level(logging.WARNING)
    note_num_gpu(flags, Process(rank=1, world_size=4, local_rank=1, device=cpu))
    assert not caplog.records
    note_num_gpu(flags, Process(rank=0, world_size=4, local_rank=0, device=cpu))
    (record,) = caplog.records
    assert "under torchrun its 4 processes drive one device each" in record.message
    note_num_gpu(parse_flags([]), Process(rank=0, world_size=1, local_rank=0, device=cpu))
    assert len(caplog.records) == 1
