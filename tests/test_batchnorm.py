"""Batch-norm statistics outside training: `--recalibrate_batch_norm` (running statistics
become the average over training batches) and `--batch_norm_statistics` (eval/infer)."""

import itertools

import pytest
import torch

from yt8m.batchnorm import batch_norm_statistics, recalibrate_batch_norm
from yt8m.data.loader import make_loader
from yt8m.data.synthetic import write_dataset
from yt8m.errors import YT8MError
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


# ---- --batch_norm_statistics=batch: the original's inference (docs/fidelity.md §6.3) ----

TINY = [
    "--num_classes=6", "--feature_sizes=8,4", "--iterations=5", "--netvlad_cluster_size=4",
    "--netvlad_hidden_size=8", "--dbof_cluster_size=16", "--dbof_hidden_size=8",
    "--moe_prob_gating",
]  # fmt: skip
MODELS_WITH_BATCH_NORM = [
    ["--model=NetVLADModelLF", "--frame_features", "--gating"],  # input norm by channel slices
    ["--model=NetVLADModelLF", "--frame_features", "--netvlad_relu"],  # hidden-layer norm
    ["--model=DbofModel", "--frame_features"],
    ["--model=GatedDbofModelLF", "--frame_features"],
    ["--model=GruModel", "--frame_features", "--gru_cells=3"],  # the gated MoE's norm
    ["--model=MoeModel"],
]


def _model_and_batch(argv: list[str], videos: int):
    """A tiny model in eval mode whose moving averages differ from any one batch's
    statistics, and a batch of `videos` videos (the loader's uint8 frames for a frame-level
    model, float features for a video-level one)."""
    flags = parse_flags([*argv, *TINY])
    torch.manual_seed(0)
    model = build_model(flags)
    shape = (4, 10, 12) if flags.frame_features else (4, 12)
    gen = torch.Generator().manual_seed(1)
    if flags.frame_features:
        x = torch.randint(0, 256, shape, generator=gen).to(torch.uint8)
        warm_up = x // 2 + 100  # other statistics than x's
    else:
        x = torch.randn(shape, generator=gen)
        warm_up = 2 * x + 1
    num_frames = torch.tensor([10, 4, 7, 1])
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(warm_up, num_frames, sampling_base(seed))
    return model.eval(), x[:videos], num_frames[:videos]


@pytest.mark.parametrize("videos", [4, 1])
@pytest.mark.parametrize("argv", MODELS_WITH_BATCH_NORM, ids=lambda a: " ".join(a))
def test_batch_statistics_predict_as_a_training_forward_and_keep_the_moving_averages(argv, videos):
    """docs/fidelity.md §6.3: with `batch`, every batch norm uses the statistics of the batch
    being predicted (the original's inference.py ran its training graph), the moving
    averages stay as they are and nothing else changes: the predictions are those of a
    training-mode forward over the same frames (the same sampling key). A batch of one
    video works as in TensorFlow (variance 0)."""
    model, x, num_frames = _model_and_batch(argv, videos)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        moving = model(x, num_frames, sampling_base(5))
        with batch_norm_statistics(model, "batch"):
            got = model(x, num_frames, sampling_base(5))
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert not any(m.training for m in model.modules())
    assert all(m.track_running_stats for m in model.modules() if hasattr(m, "running_mean"))
    model.train()
    with torch.no_grad():
        expected = model(x, num_frames, sampling_base(5))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(got, moving, rtol=1e-3, atol=1e-4)


def test_moving_statistics_change_nothing_and_other_values_are_errors():
    """docs/fidelity.md §6.3: `moving` (the default) is the original's eval.py."""
    model, x, num_frames = _model_and_batch(MODELS_WITH_BATCH_NORM[0], 4)
    with torch.no_grad():
        plain = model(x, num_frames, sampling_base(5))
        with batch_norm_statistics(model, "moving"):
            moving = model(x, num_frames, sampling_base(5))
    assert torch.equal(plain, moving)
    with pytest.raises(YT8MError, match="--batch_norm_statistics='running'.*moving, batch"):
        with batch_norm_statistics(model, "running"):
            pass
