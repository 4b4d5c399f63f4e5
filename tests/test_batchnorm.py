"""--recalibrate_batch_norm: running statistics become the average over training batches."""

import itertools

import torch

from yt8m.batchnorm import recalibrate_batch_norm
from yt8m.data.loader import make_loader
from yt8m.data.synthetic import write_dataset
from yt8m.flags import parse_flags
from yt8m.models import build_model
from yt8m.models.sampling import sampling_base


def test_statistics_are_the_mean_of_the_batches_and_momentum_is_restored(tmp_path):
    patterns = write_dataset(
        tmp_path, videos=12, shards=1, classes=5, frames=(2, 6), feature_sizes=(8, 4)
    )
    flags = parse_flags(
        [
            "--model=NetVLADModelLF",
            "--frame_features",
            "--feature_sizes=8,4",
            "--num_classes=5",
            "--max_frames=6",
            "--netvlad_cluster_size=2",
            "--netvlad_hidden_size=3",
            "--iterations=4",
            "--batch_size=4",
            "--num_readers=0",
        ]
    )
    model = build_model(flags)
    norm = (
        model.input_norm
        if hasattr(model, "input_norm")
        else next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    )
    momentum = norm.momentum
    batches = list(
        itertools.islice(make_loader(flags, patterns["frame"]["train"], training=True), 3)
    )
    seen = recalibrate_batch_norm(model, batches, sampling_base(0))
    assert seen == 3
    assert norm.momentum == momentum
    assert not model.training
    # statistics moved away from their initial values (mean 0, variance 1)
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))


def test_the_same_batch_three_times_gives_that_batch_statistics(tmp_path):
    patterns = write_dataset(tmp_path, videos=8, shards=1, classes=5, feature_sizes=(8, 4))
    flags = parse_flags(
        [
            "--model=MoeModel",
            "--moe_prob_gating",
            "--feature_sizes=8,4",
            "--num_classes=5",
            "--batch_size=8",
            "--num_readers=0",
        ]
    )
    batch = next(iter(make_loader(flags, patterns["video"]["train"], training=False)))
    model = build_model(flags)
    recalibrate_batch_norm(model, [batch])
    once = [b.clone() for b in model.buffers() if b.dtype.is_floating_point]
    assert once, "the gated MoE has a batch norm"
    recalibrate_batch_norm(model, [batch, batch, batch])
    thrice = [b for b in model.buffers() if b.dtype.is_floating_point]
    for a, b in zip(once, thrice, strict=True):
        torch.testing.assert_close(a, b)


def test_training_flag_saves_recalibrated_statistics(tmp_path):
    from yt8m.checkpoint import latest_checkpoint, load_checkpoint
    from yt8m.train import main as train_main

    patterns = write_dataset(
        tmp_path / "data", videos=16, shards=1, classes=5, feature_sizes=(8, 4)
    )
    common = [
        "--model=MoeModel",
        "--moe_prob_gating",
        "--feature_sizes=8,4",
        "--num_classes=5",
        "--batch_size=4",
        "--num_readers=0",
        "--max_steps=2",
        f"--train_data_pattern={patterns['video']['train']}",
    ]
    train_main([*common, f"--train_dir={tmp_path / 'plain'}"])
    train_main([*common, f"--train_dir={tmp_path / 'recal'}", "--recalibrate_batch_norm=3"])
    plain = load_checkpoint(latest_checkpoint(tmp_path / "plain")).model_state
    recal = load_checkpoint(latest_checkpoint(tmp_path / "recal")).model_state
    means = [k for k in plain if k.endswith("running_mean")]
    assert means
    for key in means:
        # the faithful run moved its means by 0.001 per step; the recalibrated ones are the data's
        assert recal[key].abs().max() > 10 * plain[key].abs().max()
    for key in plain:
        if "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(plain[key], recal[key])
