"""Videos cut into segments, rated-segment examples and their batches (successors.md §2)."""

import numpy as np
import pytest
import torch

from tests.segment_data import FEATURE_FLAGS, rated, write_records
from yt8m.data.loader import make_loader
from yt8m.data.records import BatchSegments
from yt8m.flags import parse_flags
from yt8m.segments.batches import VideoSegments, rated_segment_loader
from yt8m.segments.errors import SegmentError
from yt8m.segments.examples import cut_videos, rated_examples

CLASSES = 6


def flags(*extra):
    return parse_flags(
        [*FEATURE_FLAGS, f"--num_classes={CLASSES}", "--max_frames=23", "--num_readers=0", *extra],
        "train",
    )


def test_cut_consecutive_segments_the_last_one_shorter():
    """§2: start times 0, 5, 10, ...; the last segment of a 12-frame video has 2 frames."""
    inputs = torch.zeros((3, 14, 1), dtype=torch.uint8)
    for b, n in enumerate((12, 5, 0)):
        inputs[b, :n, 0] = torch.arange(1, n + 1)
    cut = cut_videos(inputs, torch.tensor([12, 5, 0]), 5)
    assert cut.video_index.tolist() == [0, 0, 0, 1]  # a video without frames has no segment
    assert cut.starts.tolist() == [0, 5, 10, 0]
    assert cut.positions.tolist() == [0, 1, 2, 0]
    assert cut.num_frames.tolist() == [5, 5, 2, 5]
    assert cut.frames.shape == (4, 5, 1)
    assert cut.frames[2, :, 0].tolist() == [11, 12, 0, 0, 0]  # the short one, zero-padded
    assert cut.frames[1, :, 0].tolist() == [6, 7, 8, 9, 10]


@pytest.mark.parametrize("frames", [1, 4, 5, 6, 9, 10, 11, 300])
def test_cut_covers_every_frame_once(frames):
    inputs = torch.arange(1, frames + 1, dtype=torch.int64).clamp(max=255).to(torch.uint8)
    cut = cut_videos(inputs.view(1, frames, 1), torch.tensor([frames]), 5)
    assert len(cut.starts) == -(-frames // 5)
    assert int(cut.num_frames.sum()) == frames
    for start, n, seg in zip(cut.starts.tolist(), cut.num_frames.tolist(), cut.frames, strict=True):
        assert seg[:n, 0].tolist() == inputs[start : start + n].tolist()


def _batch(video_ids, num_frames, segments, length=12):
    inputs = torch.zeros((len(video_ids), length, 2), dtype=torch.uint8)
    for b, n in enumerate(num_frames):
        inputs[b, :n] = torch.arange(1, n + 1).unsqueeze(1)
    return {
        "video_ids": video_ids,
        "inputs": inputs,
        "num_frames": torch.tensor(num_frames),
        "segments": BatchSegments.of(segments),
    }


def test_rated_examples_one_per_start_time_weights_at_the_rated_classes():
    """§2: labels hold the ratings at the rated classes, weights 1 there and 0 elsewhere."""
    batch = _batch(
        ["a", "b", "c"],
        [12, 7, 3],
        [rated([2, 4, 2], [5, 5, 10], [1.0, 0.0, 0.0]), None, rated([1], [0], [1.0])],
    )
    examples = rated_examples(batch, 5, CLASSES, "DATA")
    assert examples["video_ids"] == ["a:5", "a:10", "c:0"]
    assert examples["num_frames"].tolist() == [5, 2, 3]
    assert examples["inputs"].shape == (3, 5, 2)
    assert examples["inputs"][0, :, 0].tolist() == [6, 7, 8, 9, 10]
    assert examples["inputs"][1, :, 0].tolist() == [11, 12, 0, 0, 0]
    weights = examples["label_weights"]
    assert weights.dtype == torch.float32
    assert weights.nonzero().tolist() == [[0, 2], [0, 4], [1, 2], [2, 1]]
    assert examples["labels"].nonzero().tolist() == [[0, 2], [2, 1]]
    rows, classes, scores = examples["rated"]
    assert (rows.tolist(), classes.tolist(), scores.tolist()) == (
        [0, 0, 1, 2],
        [2, 4, 2, 1],
        [1, 0, 0, 1],
    )


def test_rated_segments_outside_the_video_or_the_vocabulary_are_errors():
    with pytest.raises(SegmentError, match="DATA, video 'a': a rated segment starts at 12 s"):
        rated_examples(_batch(["a"], [12], [rated([1], [12], [1.0])]), 5, CLASSES, "DATA")
    with pytest.raises(SegmentError, match="DATA, video 'a': segment label 6 is outside 0..5"):
        rated_examples(_batch(["a"], [12], [rated([6], [0], [1.0])]), 5, CLASSES, "DATA")
    twice = rated([3, 3], [5, 5], [1.0, 0.0])
    with pytest.raises(SegmentError, match="at 5 s is rated twice for class 3"):
        rated_examples(_batch(["a"], [12], [twice]), 5, CLASSES, "DATA")
    same = rated_examples(_batch(["a"], [12], [rated([3, 3], [5, 5], [1.0, 1.0])]), 5, CLASSES, "D")
    assert same["labels"].nonzero().tolist() == [[0, 3]]


@pytest.fixture(scope="module")
def rated_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rated")
    for shard in range(2):
        videos = [
            (f"v{shard}{i}", 8 + i, rated([i % CLASSES, 1], [0, 5], [1.0, 0.0])) for i in range(10)
        ]
        write_records(root / f"validate{shard}.tfrecord", videos)
    write_records(root / "plain0.tfrecord", [("p", 9, None)])
    return str(root / "validate*.tfrecord"), str(root / "plain*.tfrecord")


def test_the_loader_carries_the_ratings_in_process_and_from_workers(rated_files):
    pattern, _ = rated_files
    for readers in (0, 1):
        loader = make_loader(
            flags(f"--num_readers={readers}"),
            pattern,
            training=False,
            batch_size=7,
            with_segments=True,
        )
        batches = list(loader)
        assert all(isinstance(b["segments"], BatchSegments) for b in batches)
        assert sum(len(b["video_ids"]) for b in batches) == 20
        fourth = batches[0]["segments"].video(3)
        assert fourth.labels.tolist() == [3, 1] and fourth.start_times.tolist() == [0, 5]
        assert fourth.scores.dtype == np.float32


def test_training_batches_hold_exactly_batch_size_segments_and_resume_exactly(rated_files):
    pattern, _ = rated_files
    run = flags("--batch_size=6", "--num_epochs=2", "--seed=4")
    batches = list(rated_segment_loader(run, pattern, training=True))
    sizes = [len(b["video_ids"]) for b in batches]
    assert sizes == [6] * 13 + [2]  # 2 epochs x 20 videos x 2 rated segments = 80
    names = [n for b in batches for n in b["video_ids"]]
    assert len(set(names)) == 40 and all(names.count(n) == 2 for n in names)  # once an epoch
    resumed = list(rated_segment_loader(run, pattern, training=True, start_batch=5))
    assert [b["video_ids"] for b in resumed] == [b["video_ids"] for b in batches[5:]]
    for got, want in zip(resumed, batches[5:], strict=True):
        assert torch.equal(got["inputs"], want["inputs"])
        assert torch.equal(got["label_weights"], want["label_weights"])


def test_evaluation_batches_number_every_rated_segment_once(rated_files):
    pattern, _ = rated_files
    batches = list(rated_segment_loader(flags("--batch_size=10"), pattern, training=False))
    ids = torch.cat([b["segment_ids"] for b in batches])
    assert ids.tolist() == list(range(40))
    rows = np.concatenate([b["rated"][0] for b in batches])
    assert rows.tolist() == list(range(40))  # one rating per segment here


def test_files_without_ratings_are_an_error_naming_the_pattern(rated_files):
    _, plain = rated_files
    with pytest.raises(SegmentError, match="no rated segment in .*plain"):
        list(rated_segment_loader(flags(), plain, training=True))


def test_segment_labels_need_frame_level_data(rated_files):
    pattern, _ = rated_files
    video_level = parse_flags([f"--num_classes={CLASSES}", "--num_readers=0"], "train")
    with pytest.raises(SegmentError, match="add --frame_features"):
        rated_segment_loader(video_level, pattern, training=True)


def test_inference_segments_name_every_segment_and_number_it_by_video(rated_files):
    pattern, _ = rated_files
    stream = VideoSegments(flags("--batch_size=20"), pattern)
    batches = list(stream)
    names = [n for b in batches for n in b["video_ids"]]
    ids = torch.cat([b["segment_ids"] for b in batches]).tolist()
    assert len(stream.video_ids) == 20 and stream.slots == 5  # ceil(23 / 5)
    for name, i in zip(names, ids, strict=True):
        video, start = name.split(":")
        assert stream.video_ids[i // stream.slots] == video
        assert (i % stream.slots) * 5 == int(start)
    assert names[:3] == ["v00:0", "v00:5", "v01:0"]  # 8 and 9 frames: two segments each


def test_training_batches_are_counted_ahead_from_the_segment_fields(rated_files):
    """What the trainer needs under torchrun: every rank's batch count, known in advance."""
    pattern, _ = rated_files
    run = flags("--batch_size=7", "--num_epochs=3", "--seed=1")
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        loader = rated_segment_loader(run, pattern, training=True, rank=rank, world_size=world)
        assert loader.batch_count() == len(list(loader))
    resumed = rated_segment_loader(run, pattern, training=True, start_batch=4)
    assert resumed.batch_count() == len(list(resumed)) == -(-120 // 7) - 4
