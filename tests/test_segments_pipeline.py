"""Segment inference and evaluation end to end, in one process and under two Gloo
processes (successors.md §2)."""

import json
import os
import time

import numpy as np
import pytest
import torch

from tests.segment_data import rated, write_records
from tests.test_distributed import _free_port
from tests.test_segments_training import CLASSES, tiny_argv
from yt8m.checkpoint import latest_checkpoint, load_checkpoint, restore_model
from yt8m.distributed import init_distributed, shutdown
from yt8m.evaluate import evaluate
from yt8m.flags import parse_flags
from yt8m.inference import infer, predict
from yt8m.segments.batches import VideoSegments
from yt8m.segments.errors import SegmentError
from yt8m.segments.ground_truth import read_rated_pairs
from yt8m.segments.score import score_submission
from yt8m.segments.whitelist import write_segment_label_ids
from yt8m.train import train

WHITELIST = np.array([1, 2, 4, 6])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Rated files (videos of 6-15 frames, each its own frames, so that no two segments
    score alike), a whitelist and a model trained 6 steps."""
    root = tmp_path_factory.mktemp("pipeline")
    rng = np.random.default_rng(2)
    for shard in range(3):
        videos = []
        for i in range(9):
            n = int(rng.integers(6, 16))
            c = int(rng.integers(CLASSES))
            starts = sorted(rng.choice(np.arange(0, n, 5), size=min(2, -(-n // 5)), replace=False))
            videos.append(
                (
                    f"s{shard}v{i}",
                    n,
                    rated([c] * len(starts), starts, rng.integers(0, 2, len(starts))),
                )
            )
        firsts = [int(f) for f in rng.integers(0, 200, len(videos))]  # no two segments alike
        write_records(root / f"validate{shard}.tfrecord", videos, firsts)
    pattern = str(root / "validate*.tfrecord")
    whitelist = root / "segment_label_ids.csv"
    write_segment_label_ids(whitelist, WHITELIST)
    train_dir = root / "run"
    train(parse_flags(tiny_argv(pattern, train_dir, "--max_steps=6"), "train"))
    return pattern, str(whitelist), train_dir


def infer_argv(pattern, whitelist, train_dir, output, *extra):
    return [
        *tiny_argv(pattern, train_dir)[2:],
        f"--train_dir={train_dir}",
        f"--input_data_pattern={pattern}",
        f"--output_file={output}",
        "--segment_labels",
        f"--segment_label_ids={whitelist}",
        "--deterministic_sampling",
        "--batch_size=7",
        *extra,
    ]


def eval_argv(pattern, whitelist, train_dir, *extra):
    return [
        *tiny_argv(pattern, train_dir)[2:],
        f"--train_dir={train_dir}",
        f"--eval_data_pattern={pattern}",
        "--segment_labels",
        f"--segment_label_ids={whitelist}",
        "--deterministic_sampling",
        "--run_once",
        "--batch_size=7",
        *extra,
    ]


def read_lines(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "Class,Segments"
    return {int(c): rest.split() for c, rest in (line.split(",") for line in lines[1:])}


def model_scores(pattern, train_dir, argv):
    """Every segment's whitelisted scores by the model, in reading order, the test's way."""
    flags = parse_flags(argv, "infer")
    process = init_distributed("cpu")
    try:
        model, _ = restore_model(train_dir, -1, flags, "cpu")
        model.deterministic_sampling = True
        stream = VideoSegments(flags, pattern)
        names, scores = [], []
        for batch, p in predict(model, stream, flags, process, "test"):
            names += batch["video_ids"]
            scores.append(p[:, WHITELIST].numpy())
    finally:
        shutdown(process)
    return names, np.concatenate(scores)


@pytest.mark.parametrize("k", [3, 1000])
def test_inference_keeps_the_best_k_segments_of_each_whitelisted_class(setup, tmp_path, k):
    pattern, whitelist, train_dir = setup
    output = tmp_path / "segments.csv"
    argv = infer_argv(pattern, whitelist, train_dir, output, f"--segment_max_pred={k}")
    assert infer(parse_flags(argv, "infer")) == output
    submitted = read_lines(output)
    names, scores = model_scores(pattern, train_dir, argv)
    assert sorted(submitted) == WHITELIST.tolist()
    for column, label in enumerate(WHITELIST.tolist()):
        order = sorted(range(len(names)), key=lambda i: (-scores[i, column], i))[:k]
        assert submitted[label] == [names[i] for i in order]
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_evaluation_equals_the_score_of_the_submission_when_nothing_is_capped(setup, tmp_path):
    """Only the rated pairs' order counts, and it is inference's."""
    pattern, whitelist, train_dir = setup
    output = tmp_path / "segments.csv.gz"
    infer(parse_flags(infer_argv(pattern, whitelist, train_dir, output), "infer"))
    scored = score_submission(str(output), read_rated_pairs(pattern), num_classes=CLASSES)
    (result,) = evaluate(parse_flags(eval_argv(pattern, whitelist, train_dir), "eval"))
    assert result["segment_map_at_100000"] == pytest.approx(scored.result.map, abs=1e-9)
    assert result["segment_rated_pairs_found"] == scored.result.rated_pairs
    assert result["segment_classes"] == scored.result.classes
    saved = json.loads((train_dir / "eval" / f"eval-{result['step']}.json").read_text())
    assert saved["segment_map_at_100000"] == result["segment_map_at_100000"]
    assert result["avg_loss"] > 0 and result["num_segments"] > 0


def test_segment_inference_without_a_whitelist_is_an_error(setup, tmp_path):
    pattern, _, train_dir = setup
    argv = [
        a
        for a in infer_argv(pattern, "", train_dir, tmp_path / "s.csv")
        if not a.startswith("--segment_label_ids")
    ]
    with pytest.raises(SegmentError, match="--segment_label_ids_file is empty"):
        infer(parse_flags(argv, "infer"))
    assert not (tmp_path / "s.csv").exists()


def _rank(rank, world_size, ports, jobs, out):
    """One rank: fine-tune, infer, evaluate; each a process group of its own (as three
    torchrun jobs would be), on its own port."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    os.environ["MASTER_PORT"] = str(ports[0])
    flags = parse_flags(jobs["train"], "train")
    model = train(flags)
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    while latest_checkpoint(flags.train_dir) is None:  # rank 0 writes it after the loop
        time.sleep(0.05)
    os.environ["MASTER_PORT"] = str(ports[1])
    infer(parse_flags(jobs["infer"], "infer"))
    os.environ["MASTER_PORT"] = str(ports[2])
    results = evaluate(parse_flags(jobs["eval"], "eval"))
    with open(f"{out}/eval{rank}.json", "w") as file:
        json.dump(results, file)


def test_two_gloo_processes_finetune_infer_and_evaluate_as_one(setup, tmp_path):
    """Fine-tuning under torchrun (identical weights), one submission from two ranks equal
    to one process's, and the evaluation of two ranks equal to one's."""
    pattern, whitelist, pretrained = setup
    run = tmp_path / "fine"
    jobs = {
        "train": tiny_argv(
            pattern, run, "--segment_labels", f"--start_from={pretrained}", "--max_steps=3"
        ),
        "infer": infer_argv(pattern, whitelist, run, tmp_path / "two.csv", "--segment_max_pred=5"),
        "eval": eval_argv(pattern, whitelist, run, "--segment_max_pred=5"),
    }
    ports = set()
    while len(ports) < 3:
        ports.add(_free_port())
    ports = sorted(ports)
    torch.multiprocessing.spawn(_rank, args=(2, ports, jobs, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0)
    saved = load_checkpoint(latest_checkpoint(run))
    assert saved.step == 3 and saved.training_state["world_size"] == 2
    infer(
        parse_flags(
            infer_argv(pattern, whitelist, run, tmp_path / "one.csv", "--segment_max_pred=5"),
            "infer",
        )
    )
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    two = json.loads((tmp_path / "eval0.json").read_text())[0]
    assert json.loads((tmp_path / "eval1.json").read_text()) == [{}]
    (one,) = evaluate(
        parse_flags(eval_argv(pattern, whitelist, run, "--segment_max_pred=5"), "eval")
    )
    assert two["segment_map_at_5"] == pytest.approx(one["segment_map_at_5"], abs=1e-9)
    assert two["num_segments"] == one["num_segments"]
    assert two["avg_loss"] == pytest.approx(one["avg_loss"], rel=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
