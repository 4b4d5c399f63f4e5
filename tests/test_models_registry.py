"""`build_model(flags)`: the seed's models at their exact sizes (fidelity.md §7), every
registered model buildable and runnable, clear errors."""

import pytest
import torch

from tests.seed import flag_value, training_commands
from yt8m.flags import parse_flags
from yt8m.models import MODELS, ModelError, build_model, count_trainable_parameters
from yt8m.models.registry import FRAME_LEVEL
from yt8m.models.sampling import sampling_base

# fidelity.md §7, in the seed README's order. PyTorch's LSTM/GRU carry a second bias per
# layer: +4*cells (LSTM) and +3*cells (GRU) per layer, documented in their docstrings.
TF_PARAMETERS = [
    333_229_888,
    333_090_240,
    41_543_128,
    41_712_680,
    332_951_360,
    73_715_832,
    113_902_808,
]
PYTORCH_EXTRA = {"GruModel": 2 * 3 * 1200, "LstmModel": 2 * 4 * 1024}


@pytest.mark.parametrize(
    ("argv", "tf_count"),
    list(zip(training_commands(), TF_PARAMETERS, strict=True)),
    ids=lambda v: flag_value(v, "train_dir") if isinstance(v, list) else str(v),
)
def test_seed_models_have_the_original_parameter_count(argv, tf_count):
    flags = parse_flags(argv, "train")
    with torch.device("meta"):
        model = build_model(flags)
    assert count_trainable_parameters(model) == tf_count + PYTORCH_EXTRA.get(flags.model, 0)


TINY = [
    "--num_classes=6", "--feature_sizes=8,4", "--iterations=5", "--netvlad_cluster_size=4",
    "--netvlad_hidden_size=8", "--fv_cluster_size=4", "--fv_hidden_size=8",
    "--dbof_cluster_size=16", "--dbof_hidden_size=8", "--lstm_cells=4", "--gru_cells=4",
    "--moe_prob_gating", "--gating", "--nextvlad_cluster_size=4", "--nextvlad_hidden_size=8",
    "--groups=2",
]  # fmt: skip
# The mixture averages logits: only the logistic classifier gives them.
EXTRA = {"MixNeXtVladModel": ["--video_level_classifier_model=LogisticModel"]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_predicts(name):
    frame = name in FRAME_LEVEL
    flags = parse_flags(
        [f"--model={name}", f"--frame_features={frame}", *TINY, *EXTRA.get(name, [])]
    )
    model = build_model(flags)
    # the loader's inputs: uint8 frames (frame-level) or float32 features (video-level)
    inputs = torch.randint(0, 256, (3, 10, 12), dtype=torch.uint8) if frame else torch.randn(3, 12)
    p = model(inputs, torch.tensor([10, 4, 1]), sampling_base(0))
    assert p.shape == (3, 6) and ((p >= 0) & (p <= 1)).all()
    assert model.regularization_loss().shape == ()
    assert model.deterministic_sampling is False


def test_flags_reach_the_model():
    flags = parse_flags(
        ["--model=NetVLADModelLF", "--frame_features", "--deterministic_sampling", "--lightvlad"]
        + TINY
    )
    model = build_model(flags)
    assert model.deterministic_sampling is True
    assert type(model.video_pooling).__name__ == "NetRVLAD"
    assert model.audio_pooling.assignment.weight.shape == (4, 2)  # K/2 clusters on audio
    assert model.input_norm.num_features == 12


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ModelError, match="NetVLADModelLF.*SoftDbofModelLF"):
        build_model(parse_flags(["--model=NetVLADModel", "--frame_features"]))


def test_frame_and_video_level_must_match_the_data():
    with pytest.raises(ModelError, match="frame-level.*--frame_features=True"):
        build_model(parse_flags(["--model=NetVLADModelLF"]))
    with pytest.raises(ModelError, match="video-level.*--frame_features=False"):
        build_model(parse_flags(["--model=MoeModel", "--frame_features"]))
