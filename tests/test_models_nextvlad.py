"""NeXtVLAD and MixNeXtVladModel against numpy transcriptions of linrongc's graph
(successors.md §3: nextvlad.py, video_level_models.py), their parameter counts at the two
published configurations counted by hand from the original's variables, the input
transform, the on-the-fly distillation term and the initialisers."""

import math

import numpy as np
import pytest
import torch

from yt8m.data.features import PcaFrames, dequantize, pca_eigenvalues
from yt8m.errors import YT8MError
from yt8m.flags import parse_flags
from yt8m.models import build_model, count_trainable_parameters
from yt8m.models.classifiers import ClassifierSpec
from yt8m.models.layers import variance_scaling_parameter
from yt8m.models.nextvlad import MixNeXtVladModel, NeXtVLADModel, mutual_distillation

B, T, CLASSES = 3, 6, 5
SIZES = (8, 4)  # rgb, audio
EPS = 1e-3  # slim's batch-norm epsilon


def randomised(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """float64, every parameter and batch-norm statistic drawn anew (biases and batch-norm
    affine terms are 0/1 at first, which would hide a misplaced term)."""
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
            if name.endswith("norm.weight") or ".norm." in name and name.endswith("weight"):
                p.abs_().add_(0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def frames(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 256, (B, T, sum(SIZES)), generator=gen, dtype=torch.uint8)
    return inputs, torch.tensor([6, 2, 4])  # padding rows in videos 1 and 2


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def bn(x: np.ndarray, norm: torch.nn.BatchNorm1d, training: bool) -> np.ndarray:
    """slim.batch_norm over the rows of x [N, C]: batch statistics in training."""
    if training:
        mean, var = x.mean(0), x.var(0)
    else:
        mean, var = np_(norm.running_mean), np_(norm.running_var)
    return (x - mean) / np.sqrt(var + EPS) * np_(norm.weight) + np_(norm.bias)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def transformed(inputs: torch.Tensor, num_frames: torch.Tensor) -> np.ndarray:
    """linrongc's train.py: dequantize, zero padding rows (the reader pads after
    dequantizing), then (x - offset) * (sqrt(eigenvalue) + 1e-4) on rgb, offset 0 and
    scale 1 on audio."""
    x = np_(dequantize(inputs))
    for b, n in enumerate(num_frames.tolist()):
        x[b, n:] = 0
    rgb = SIZES[0]
    offset = np.array([4 / 512] * rgb + [0] * SIZES[1])
    scale = np.concatenate([np.sqrt(pca_eigenvalues()[:rgb].astype(np.float64)) + 1e-4,
                            np.ones(SIZES[1])])  # fmt: skip
    return (x - offset) * scale


def nextvlad_reference(vlad, x: np.ndarray, mask: np.ndarray, training: bool) -> np.ndarray:
    """nextvlad.py's NeXtVLAD.forward, op by op."""
    batch, frames_, _ = x.shape
    groups, clusters = vlad.groups, vlad.centers.shape[1]
    x = x @ np_(vlad.expand.weight) + np_(vlad.expand.bias)  # fully_connected
    width = x.shape[-1]
    attention = sigmoid(x @ np_(vlad.attention.weight) + np_(vlad.attention.bias))
    attention = (attention * mask[:, :, None]).reshape(batch, frames_ * groups, 1)
    feature = width // groups
    activation = x.reshape(-1, width) @ np_(vlad.assignment.weight)
    activation = bn(activation, vlad.assignment.after.norm, training)
    activation = softmax(activation.reshape(batch, frames_ * groups, clusters)) * attention
    a = activation.sum(-2, keepdims=True) * np_(vlad.centers)[None]  # [B, F, K]
    reshaped = x.reshape(batch, frames_ * groups, feature)
    v = np.transpose(np.transpose(activation, (0, 2, 1)) @ reshaped, (0, 2, 1)) - a
    v = v / np.sqrt(np.maximum((v**2).sum(1, keepdims=True), 1e-12))  # l2_normalize(v, 1)
    return bn(v.reshape(batch, clusters * feature), vlad.norm, training)


def branch_reference(branch, x: np.ndarray, mask: np.ndarray, training: bool) -> np.ndarray:
    """NeXtVLADModel.create_model up to the classifier (no dropout: drop_rate 0 here or
    evaluation mode)."""
    vlad = np.concatenate(
        [
            nextvlad_reference(branch.video, x[..., : SIZES[0]], mask, training),
            nextvlad_reference(branch.audio, x[..., SIZES[0] :], mask, training),
        ],
        axis=1,
    )
    activation = bn(vlad @ np_(branch.hidden.weight), branch.hidden.after.norm, training)
    gates = np.maximum(bn(activation @ np_(branch.gating.squeeze), branch.gating.norm, training), 0)
    return activation * sigmoid(gates @ np_(branch.gating.excite))


def prepared(model, inputs: torch.Tensor, num_frames: torch.Tensor) -> np.ndarray:
    """The model's transformed rows (float32, tested below against `transformed`) as one
    float64 array ``[B, T, D]``."""
    return np.concatenate([np_(part) for part in model.prepare(inputs, num_frames)[0]], -1)


def mask_of(num_frames: torch.Tensor) -> np.ndarray:
    return (np.arange(T)[None] < num_frames.numpy()[:, None]).astype(np.float64)


TINY = dict(cluster_size=4, hidden_size=8, groups=4, expansion=2, gating_reduction=2)


@pytest.mark.parametrize("training", [True, False])
def test_nextvlad_model_matches_the_graph(training):
    model = randomised(NeXtVLADModel(CLASSES, SIZES, drop_rate=0.0, **TINY)).train(training)
    inputs, num_frames = frames()
    x = prepared(model, inputs, num_frames)
    h = branch_reference(model.branch, x, mask_of(num_frames), training)
    logistic = model.classifier
    expected = sigmoid(h @ np_(logistic.weight) + np_(logistic.bias))
    got = model(inputs, num_frames)
    np.testing.assert_allclose(np_(got), expected, rtol=1e-9, atol=1e-12)


def test_padding_frames_leave_the_aggregation_but_enter_the_cluster_batch_norm():
    """successors.md §3: the mask takes padding rows out of the VLAD sums; in training
    their (non-zero) transformed values still change the cluster batch norm's statistics."""
    model = randomised(NeXtVLADModel(CLASSES, SIZES, drop_rate=0.0, **TINY))
    inputs, num_frames = frames()
    changed = inputs.clone()
    changed[1, 2:] = 17  # bytes in padding rows are ignored: rows are zeroed first
    model.eval()
    torch.testing.assert_close(model(changed, num_frames), model(inputs, num_frames))
    shorter = num_frames.clone()
    shorter[0] = 3  # video 0's last rows become padding: its prediction changes...
    eval_out = model(inputs, shorter)
    assert not torch.allclose(eval_out[0], model(inputs, num_frames)[0])
    torch.testing.assert_close(eval_out[1:], model(inputs, num_frames)[1:])  # ...no other's
    model.train()
    two = model(inputs[:2], num_frames[:2])
    padded = torch.cat([inputs[:2], torch.zeros_like(inputs[:1])])
    three = model(padded, torch.tensor([6, 2, 0]))
    assert not torch.allclose(two, three[:2])  # the empty video's rows moved the statistics


def test_dropout_acts_in_training_only():
    model = randomised(NeXtVLADModel(CLASSES, SIZES, drop_rate=0.5, **TINY))
    inputs, num_frames = frames()
    model.eval()
    reference = randomised(NeXtVLADModel(CLASSES, SIZES, drop_rate=0.0, **TINY)).eval()
    torch.testing.assert_close(model(inputs, num_frames), reference(inputs, num_frames))
    model.train()
    torch.manual_seed(0)
    first = model(inputs, num_frames)
    second = model(inputs, num_frames)
    assert not torch.allclose(first, second)


def mixture_reference(model, inputs, num_frames, training: bool) -> tuple[np.ndarray, ...]:
    """MixNeXtVladModel.create_model: mixture weights from the batch-normalised mean of all
    rows, branch logits, sigmoid of the weighted logits."""
    x = prepared(model, inputs, num_frames)
    mask = mask_of(num_frames)
    weights = softmax(
        bn(x.mean(1), model.mix_norm, training) @ np_(model.mix_weights.weight)
        + np_(model.mix_weights.bias)
    )
    logits = np.stack(
        [
            branch_reference(branch, x, mask, training) @ np_(c.weight) + np_(c.bias)
            for branch, c in zip(model.branches, model.classifiers, strict=True)
        ],
        axis=1,
    )
    mix_logit = (weights[..., None] * logits).sum(1)
    return sigmoid(mix_logit), mix_logit, logits


def kl_by_hand(mix_logit: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    """cl_lambda's factor: mean over videos of sum over branches of
    sum_c p_c (log(p_c + 1e-8) - log(q_ic + 1e-8)), p, q softmax over classes of logit/T."""
    total = 0.0
    for b in range(mix_logit.shape[0]):
        p = softmax(mix_logit[b] / temperature)
        for i in range(logits.shape[1]):
            q = softmax(logits[b, i] / temperature)
            total += sum(
                p[c] * (math.log(p[c] + 1e-8) - math.log(q[c] + 1e-8)) for c in range(len(p))
            )
    return total / mix_logit.shape[0]


def test_mixture_matches_the_graph_and_its_distillation_term_the_hand_computation():
    model = MixNeXtVladModel(
        CLASSES, SIZES, mix_number=3, cl_temperature=3.0, cl_lambda=9.0, drop_rate=0.0,
        l2_penalty=0.01, **TINY,
    )  # fmt: skip
    model = randomised(model)
    inputs, num_frames = frames()
    got = model(inputs, num_frames)
    prediction, mix_logit, logits = mixture_reference(model, inputs, num_frames, True)
    np.testing.assert_allclose(np_(got), prediction, rtol=1e-9, atol=1e-12)
    auxiliary = model.auxiliary_predictions()
    assert len(auxiliary) == 3
    for i, p in enumerate(auxiliary):
        np.testing.assert_allclose(np_(p), sigmoid(logits[:, i]), rtol=1e-9)
    l2 = sum(
        0.01 * 0.5 * ((np_(c.weight) ** 2).sum() + (np_(c.bias) ** 2).sum())
        for c in model.classifiers
    )
    expected = l2 + 9.0 * kl_by_hand(mix_logit, logits, 3.0)
    assert model.regularization_loss().item() == pytest.approx(expected, rel=1e-9)
    model.eval()
    model(inputs, num_frames)
    assert model.auxiliary_predictions() == []
    assert model.regularization_loss().item() == pytest.approx(l2, rel=1e-12)
    np.testing.assert_allclose(
        np_(model(inputs, num_frames)), mixture_reference(model, inputs, num_frames, False)[0]
    )


def test_distillation_term_of_equal_logits_is_zero_and_gradients_reach_both_sides():
    logits = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    mix = logits[:, 0].detach().clone().requires_grad_()
    same = mutual_distillation(logits[:, :1].detach().squeeze(1), logits[:, :1].detach(), 2.0)
    assert same.item() == pytest.approx(0.0, abs=1e-12)
    term = mutual_distillation(mix, logits, 2.0)
    assert term.item() == pytest.approx(kl_by_hand(np_(mix), np_(logits), 2.0), rel=1e-9)
    term.backward()
    assert mix.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


def test_input_transform_is_offset_and_pca_scale_with_padding_rows_zeroed_first():
    inputs, num_frames = frames()
    transform = PcaFrames(SIZES)
    got = transform.all_frames(inputs, num_frames)
    np.testing.assert_allclose(np_(got), transformed(inputs, num_frames), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1, 2], -transform.offset * transform.scale)
    real = torch.arange(T).unsqueeze(0) < num_frames.unsqueeze(1)
    rgb, audio = transform([inputs[..., : SIZES[0]], inputs[..., SIZES[0] :]], real)
    torch.testing.assert_close(torch.cat([rgb, audio], -1), got)  # by parts, the same


def test_the_carried_eigenvalues_are_the_published_ones():
    """The project's copy of linrongc's yt8m_pca/eigenvals.npy: 2048 values, positive,
    descending (a PCA), the first ones as published."""
    values = pca_eigenvalues()
    assert values.shape == (2048,) and values.dtype == np.float32
    assert (values > 0).all() and (np.diff(values) <= 0).all()
    np.testing.assert_allclose(np.sqrt(values[:3]) + 1e-4, [3.8391762, 2.888074, 2.6521115])


def test_the_willow_input_is_selectable():
    model = NeXtVLADModel(CLASSES, SIZES, transform="willow", **TINY)
    inputs, num_frames = frames()
    parts, mask = model.prepare(inputs, num_frames)
    x = torch.cat(parts, -1)
    torch.testing.assert_close(x[0].norm(dim=-1), torch.ones(T))
    assert (x[1, 2:] == 0).all() and mask.tolist()[1] == [1, 1, 0, 0, 0, 0]
    with pytest.raises(YT8MError, match="--nextvlad_input"):
        NeXtVLADModel(CLASSES, SIZES, transform="l2", **TINY)


def test_variance_scaling_initialiser_is_slims():
    """slim.variance_scaling_initializer(): truncated normal, stddev sqrt(1.3 * 2 / fan_in)
    before truncation at 2 standard deviations (variance about 2 / fan_in)."""
    w = variance_scaling_parameter(400, 300).detach()
    std = math.sqrt(2.6 / 400)
    assert w.abs().max() <= 2 * std
    assert abs(w.std().item() - 0.8796 * std) < 0.01 * std  # truncnorm(-2, 2)'s std
    assert variance_scaling_parameter(1, 50, 20).abs().max() <= 2 * math.sqrt(2.6 / 50)


def test_bad_settings_are_clear_errors():
    with pytest.raises(YT8MError, match="--groups=3"):
        NeXtVLADModel(CLASSES, SIZES, cluster_size=4, hidden_size=8, groups=3)
    with pytest.raises(YT8MError, match="LogisticModel"):
        MixNeXtVladModel(CLASSES, SIZES, classifier=ClassifierSpec("MoeModel"), **TINY)
    with pytest.raises(YT8MError, match="--drop_rate"):
        NeXtVLADModel(CLASSES, SIZES, drop_rate=1.0, **{**TINY})
    with pytest.raises(YT8MError, match="--mix_number"):
        MixNeXtVladModel(CLASSES, SIZES, mix_number=0, **TINY)


def test_moe_classifier_uses_l2_penalty():
    model = NeXtVLADModel(
        CLASSES, SIZES, classifier=ClassifierSpec("MoeModel", num_mixtures=3), l2_penalty=0.5,
        **TINY,
    )  # fmt: skip
    assert model.classifier.num_mixtures == 3 and model.classifier.l2_penalty == 0.5


# ---- parameter counts at the published configurations (2018 vocabulary: 3862) ----


def nextvlad_variables(features: int, clusters: int, groups: int, expansion: int) -> int:
    """Trainable variables of one NeXtVLAD scope in nextvlad.py."""
    width = expansion * features
    feature = width // groups
    return (
        features * width + width  # fully_connected (expansion): weights, biases
        + width * groups + groups  # fully_connected (attention, sigmoid)
        + width * groups * clusters  # cluster_weights
        + 2 * groups * clusters  # cluster_bn beta, gamma
        + feature * clusters  # cluster_weights2 [1, feature, clusters]
        + 2 * clusters * feature  # vlad_bn beta, gamma
    )  # fmt: skip


def branch_variables(
    clusters: int, hidden: int, groups: int, reduction: int, classes: int = 3862
) -> int:
    """One NeXtVLAD model body (video 1024 and audio 128 features) and its logistic."""
    vlad_dim = clusters * 2048 // groups + (clusters // 2) * 256 // (groups // 2)
    return (
        nextvlad_variables(1024, clusters, groups, 2)
        + nextvlad_variables(128, clusters // 2, groups // 2, 2)
        + vlad_dim * hidden + 2 * hidden  # hidden1_weights, hidden1_bn
        + hidden * (hidden // reduction) + 2 * (hidden // reduction)  # gating_weights_1, gating_bn
        + (hidden // reduction) * hidden  # gating_weights_2
        + hidden * classes + classes  # LogisticModel: weights, biases
    )  # fmt: skip


def nextvlad_count(classes: int = 3862) -> int:
    """NeXtVLADModel of scripts/train_nextvlad_local.sh."""
    return branch_variables(128, 2048, 8, 8, classes)


def mixture_count(classes: int = 3862) -> int:
    """MixNeXtVladModel of scripts/train_mix_nextvlad_final_submission.sh: mix_weights_bn
    (beta, gamma of 1152), mix_weights (fully connected 1152 -> 3), three branches."""
    return 2 * 1152 + 1152 * 3 + 3 + 3 * branch_variables(112, 2048, 8, 16, classes)


PUBLISHED = [
    (
        "--model=NeXtVLADModel --groups=8 --nextvlad_cluster_size=128 "
        "--nextvlad_hidden_size=2048 --expansion=2 --gating_reduction=8 --drop_rate=0.5",
        nextvlad_count(),
    ),
    (
        "--model=MixNeXtVladModel --groups=8 --nextvlad_cluster_size=112 "
        "--nextvlad_hidden_size=2048 --expansion=2 --gating_reduction=16 --drop_rate=0.5 "
        "--mix_number=3 --cl_temperature=3 --cl_lambda=9",
        mixture_count(),
    ),
]


@pytest.mark.parametrize(("argv", "count"), PUBLISHED, ids=["NeXtVLAD", "MixNeXtVlad"])
def test_published_configurations_have_the_original_parameter_count(argv, count):
    flags = parse_flags(
        [*argv.split(), "--video_level_classifier_model=LogisticModel", "--frame_features",
         "--num_classes=3862"]
    )  # fmt: skip
    with torch.device("meta"):
        model = build_model(flags)
    assert count_trainable_parameters(model) == count


def test_published_counts_are_the_papers():
    """successors.md §3: NeXtVLAD 89 M parameters; the mixture about 944 MB of float32."""
    assert round(PUBLISHED[0][1] / 1e6) == 89
    assert round(PUBLISHED[1][1] * 4 / 1e6) == 944
