"""Fine-tuning on rated segments: label weights, --start_from, torchrun (successors.md §2)."""

import logging

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import yt8m.objective
from tests.segment_data import FEATURE_FLAGS, rated, write_records
from yt8m.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint
from yt8m.flags import parse_flags
from yt8m.losses import get_loss
from yt8m.objective import Objective
from yt8m.segments.errors import SegmentError
from yt8m.train import train

CLASSES = 7


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "HingeLoss", "SoftmaxLoss"])
def test_label_weights_leave_unrated_classes_out_of_the_loss(name):
    """§2 (the starter's losses.py label_weights): weight 0 = the class does not count."""
    loss = get_loss(name)
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)
    weights = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    predictions = torch.tensor([[0.7, 0.2, 0.9, 0.1], [0.5, 0.6, 0.3, 0.8]], requires_grad=True)
    value = loss(predictions, labels, weights)
    value.backward()
    assert torch.all(predictions.grad[weights == 0] == 0)
    assert torch.all(predictions.grad[weights == 1] != 0)
    changed = predictions.detach().clone()
    changed[weights == 0] = torch.tensor([0.05, 0.3, 0.99, 0.42])
    assert torch.allclose(loss(changed, labels, weights), value)
    assert not torch.allclose(loss(predictions, labels), value)  # without weights they count


def test_cross_entropy_with_weights_is_the_sum_over_rated_classes():
    loss = get_loss("CrossEntropyLoss")
    p = torch.tensor([[0.8, 0.3, 0.6]])
    labels = torch.tensor([[True, False, True]])
    rated_only = loss(p[:, :2], labels[:, :2])
    assert torch.allclose(loss(p, labels, torch.tensor([[1.0, 1.0, 0.0]])), rated_only)


def test_the_objective_weights_the_auxiliary_label_losses_too():
    """§2 with §3's mixture: every label loss of a step (the branches' too) counts only
    the rated classes."""

    class TwoHeads(torch.nn.Module):
        def __init__(self, branch):
            super().__init__()
            self.branch = branch

        def auxiliary_predictions(self):
            return [self.branch]

        def regularization_loss(self):
            return torch.tensor(0.0)

    p = torch.tensor([[0.8, 0.3, 0.6], [0.2, 0.7, 0.4]])
    q = torch.tensor([[0.5, 0.9, 0.1], [0.6, 0.2, 0.3]])
    labels = torch.tensor([[True, False, True], [False, True, False]])
    weights = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    objective = Objective(parse_flags([], "train"), torch.device("cpu"))
    batch = {"label_weights": weights}
    label, _ = objective(TwoHeads(q), p, labels, batch, None, None)
    loss = get_loss("CrossEntropyLoss")
    assert torch.allclose(label, loss(p, labels, weights) + loss(q, labels, weights))
    assert not torch.allclose(label, loss(p, labels) + loss(q, labels))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Rated files (frame t of every video holds t; 2-3 rated segments a video)."""
    root = tmp_path_factory.mktemp("segdata")
    for shard in range(3):
        videos = []
        for i in range(12):
            c = (shard * 12 + i) % CLASSES
            videos.append(
                (
                    f"v{shard}{i:02d}",
                    11 + i % 5,
                    rated([c, c, (c + 2) % CLASSES], [0, 5, 5], [1.0, 0.0, 1.0]),
                )
            )
        write_records(root / f"validate{shard}.tfrecord", videos)
    return str(root / "validate*.tfrecord")


def tiny_argv(pattern, train_dir, *extra):
    return [
        f"--train_data_pattern={pattern}",
        f"--train_dir={train_dir}",
        *FEATURE_FLAGS,
        f"--num_classes={CLASSES}",
        "--max_frames=16",
        "--model=NetVLADModelLF",
        "--iterations=4",
        "--netvlad_cluster_size=3",
        "--netvlad_hidden_size=5",
        "--batch_size=6",
        "--base_learning_rate=0.01",
        "--learning_rate_decay_examples=12",
        "--learning_rate_decay=0.5",
        "--num_readers=0",
        "--progress=False",
        "--device=cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """A model trained 8 steps on the videos' labels (the learning rate decayed 4 times)."""
    train_dir = tmp_path_factory.mktemp("pretrained") / "run"
    train(parse_flags(tiny_argv(data, train_dir, "--max_steps=8"), "train"))
    return train_dir


def finetune_argv(data, pretrained, train_dir, *extra):
    """Fine-tuning flags: other model flags on the command line than the pretrained's."""
    return tiny_argv(
        data,
        train_dir,
        "--segment_labels",
        f"--start_from={pretrained}",
        "--netvlad_cluster_size=9",
        "--model=LstmModel",
        *extra,
    )


def test_start_from_keeps_the_pretrained_architecture_and_weights(
    data, pretrained, tmp_path, caplog
):
    run = tmp_path / "fine"
    with caplog.at_level(logging.WARNING):
        train(parse_flags(finetune_argv(data, pretrained, run, "--max_steps=0"), "train"))
    assert "--model=LstmModel on the command line differs" in caplog.text
    saved = load_checkpoint(latest_checkpoint(run))
    source = load_checkpoint(latest_checkpoint(pretrained))
    assert saved.step == 0
    assert (saved.flags.model, saved.flags.netvlad_cluster_size) == ("NetVLADModelLF", 3)
    assert saved.flags.segment_labels and saved.flags.start_from == str(pretrained)
    assert saved.model_state.keys() == source.model_state.keys()
    for name, tensor in source.model_state.items():
        assert torch.equal(saved.model_state[name], tensor), name


def _scalars(train_dir, tag):
    events = EventAccumulator(str(train_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_finetuning_counts_only_rated_classes_and_restarts_the_schedule(
    data, pretrained, tmp_path, monkeypatch
):
    """§2: each step's loss gets the label weights of its batch: 1 at the rated classes."""
    calls = []
    real = yt8m.objective.get_loss

    def spy(name, alpha=0.5):
        loss = real(name, alpha)

        def recorded(predictions, labels, label_weights=None):
            calls.append((labels.clone(), None if label_weights is None else label_weights.clone()))
            return loss(predictions, labels, label_weights)

        return recorded

    monkeypatch.setattr(yt8m.objective, "get_loss", spy)
    run = tmp_path / "fine"
    train(parse_flags(finetune_argv(data, pretrained, run, "--max_steps=4"), "train"))
    assert len(calls) == 4
    for labels, weights in calls:
        assert weights is not None and labels.shape == weights.shape == (6, CLASSES)
        assert set(weights.unique().tolist()) == {0.0, 1.0}
        assert torch.all(weights.sum(1) >= 1) and torch.all(weights.sum(1) <= 2)
        assert not torch.any(labels & (weights == 0))  # positives are rated pairs
    # the pretrained run's last step had decayed 3 times (7 x 6 examples // 12); the
    # fine-tune starts again at the base rate
    assert _scalars(pretrained, "train/learning_rate")[-1] == (8, pytest.approx(0.01 * 0.5**3))
    rates = _scalars(run, "train/learning_rate")
    assert rates[0] == (1, pytest.approx(0.01))
    assert rates[-1] == (4, pytest.approx(0.01 * 0.5))  # 3 steps x 6 examples // 12 = 1 decay


def test_a_resumed_finetune_continues_its_own_checkpoints(data, pretrained, tmp_path):
    run = tmp_path / "fine"
    argv = finetune_argv(data, pretrained, run, "--num_classes=4716")
    train(parse_flags([*argv, "--max_steps=2"], "train"))
    train(parse_flags([*argv, "--max_steps=3"], "train"))
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps == [2, 3]
    assert load_checkpoint(latest_checkpoint(run)).flags.num_classes == CLASSES


def test_start_from_errors_name_the_flag_and_the_checkpoint(data, pretrained, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(parse_flags(finetune_argv(data, tmp_path / "nowhere", tmp_path / "a"), "train"))
    sizes = [
        a if a != "--feature_sizes=4,2" else "--feature_sizes=3,3"
        for a in finetune_argv(data, pretrained, tmp_path / "b")
    ]
    with pytest.raises(SegmentError, match="--start_from=.* was trained on .*'4,2'"):
        train(parse_flags(sizes, "train"))


NEXTVLAD = [
    "--model=NeXtVLADModel", "--video_level_classifier_model=LogisticModel",
    "--nextvlad_cluster_size=4", "--nextvlad_hidden_size=8", "--groups=2",
    "--gating_reduction=2", "--nextvlad_input=willow", "--ema_decay=0.5",
]  # fmt: skip


def test_finetuning_a_nextvlad_keeps_its_flags_and_starts_from_its_ema(data, tmp_path):
    """§2-3: a NeXtVLAD pretrained on video labels (linrongc's model) is fine-tuned with its
    architecture; its EMA weights, what eval and infer predict with, are the start."""
    source = tmp_path / "nextvlad"
    train(parse_flags(tiny_argv(data, source, "--max_steps=3", *NEXTVLAD), "train"))
    run = tmp_path / "fine"
    argv = [
        *finetune_argv(data, source, run, "--max_steps=0"),
        "--nextvlad_cluster_size=16",
        "--groups=8",
        "--nextvlad_input=pca",
    ]
    train(parse_flags(argv, "train"))
    pretrained, saved = (load_checkpoint(latest_checkpoint(d)) for d in (source, run))
    model_flags = ("model", "nextvlad_cluster_size", "groups", "nextvlad_input", "drop_rate")
    assert [getattr(saved.flags, f) for f in model_flags] == ["NeXtVLADModel", 4, 2, "willow", 0.5]
    assert pretrained.ema_state is not None
    differs = [n for n in saved.model_state if n.endswith("weight")]
    assert any(not torch.equal(pretrained.ema_state[n], pretrained.model_state[n]) for n in differs)
    for name, tensor in pretrained.ema_state.items():
        assert torch.equal(saved.model_state[name], tensor), name
    train(parse_flags([*argv[:-3], "--max_steps=2"], "train"))  # and it trains on segments
    assert load_checkpoint(latest_checkpoint(run)).step == 2
