"""Distillation (successors.md §3: an ensemble distilled into one model) and the loss of a
training step (`yt8m.objective`): soft targets read from prediction files or computed by
teacher checkpoints, the mixed loss against a hand computation, and linrongc's
auxiliary label losses of the mixture."""

import gzip
import math

import numpy as np
import pytest
import torch

from tests.test_train import CLASSES, tiny_flags, write_tiny_training_set
from yt8m.checkpoint import latest_checkpoint, load_checkpoint, restore_model
from yt8m.data.loader import make_loader
from yt8m.distill import DistillationError, SoftTargets, soft_target_loss
from yt8m.flags import parse_flags
from yt8m.losses import cross_entropy_loss
from yt8m.models.nextvlad import MixNeXtVladModel, mutual_distillation
from yt8m.models.sampling import sampling_base, step_key
from yt8m.objective import Objective
from yt8m.submission import SUBMISSION_HEADER, format_submission_lines
from yt8m.train import train

IDS = ["Ta", "Tb", "Tc", "Td"]


def write_predictions(path, ids, probabilities, top_k=CLASSES) -> None:
    text = SUBMISSION_HEADER + "\n" + format_submission_lines(ids, probabilities, top_k)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def probabilities(seed: int, rows: int = len(IDS)) -> torch.Tensor:
    return torch.rand(rows, CLASSES, generator=torch.Generator().manual_seed(seed))


def distill_flags(*extra: str):
    return parse_flags([f"--num_classes={CLASSES}", "--frame_features", *extra])


def test_soft_targets_are_the_mean_of_the_files_in_the_batch_order(tmp_path):
    a, b = probabilities(0), probabilities(1)
    write_predictions(tmp_path / "a.csv", IDS, a)
    write_predictions(tmp_path / "b.csv.gz", IDS[::-1], b.flip(0))  # another order
    targets = SoftTargets(
        distill_flags(f"--distill_from={tmp_path / 'a.csv'},{tmp_path / 'b.csv.gz'}"), "cpu"
    )
    order = [2, 0, 3]
    got = targets([IDS[i] for i in order], torch.zeros(3, 2, 1), torch.ones(3), None)
    expected = (a.double().numpy().round(6) + b.double().numpy().round(6)) / 2
    np.testing.assert_allclose(got.numpy(), expected[order], atol=1e-6)


def test_files_without_every_class_or_video_are_clear_errors(tmp_path):
    write_predictions(tmp_path / "top5.csv", IDS, probabilities(0), top_k=5)
    with pytest.raises(DistillationError, match=r"top5.csv:2: video Ta has 5 .*--top_k=12"):
        SoftTargets(distill_flags(f"--distill_from={tmp_path / 'top5.csv'}"), "cpu")
    write_predictions(tmp_path / "a.csv", IDS, probabilities(0))
    write_predictions(tmp_path / "b.csv", IDS[:3], probabilities(1, 3))
    with pytest.raises(DistillationError, match="b.csv has 3 videos.*same videos"):
        SoftTargets(
            distill_flags(f"--distill_from={tmp_path / 'a.csv'},{tmp_path / 'b.csv'}"), "cpu"
        )
    targets = SoftTargets(distill_flags(f"--distill_from={tmp_path / 'a.csv'}"), "cpu")
    with pytest.raises(DistillationError, match="training video Tz is not in"):
        targets(["Ta", "Tz"], torch.zeros(2, 1, 1), torch.ones(2), None)
    with pytest.raises(DistillationError, match="--distill_weight=1.5"):
        SoftTargets(
            distill_flags(f"--distill_from={tmp_path / 'a.csv'}", "--distill_weight=1.5"), "cpu"
        )


def test_distilling_on_rated_segments_is_refused_before_any_teacher_loads(tmp_path):
    """Soft targets cover every class, the rated segments' loss only the rated ones
    (successors.md section 2): mixing them would train the unrated classes after all."""
    flags = distill_flags(f"--distill_from={tmp_path / 'absent.csv'}", "--segment_labels")
    with pytest.raises(DistillationError, match="--distill_from with --segment_labels"):
        Objective(flags, torch.device("cpu"))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_soft_target_loss_by_hand(temperature):
    p = torch.tensor([[0.9, 0.2], [0.5, 0.01]], dtype=torch.float64)
    t = torch.tensor([[0.7, 0.1], [0.3, 0.0]], dtype=torch.float64)

    def soften(q: float) -> float:
        if temperature == 1:
            return q
        q = min(max(q, 1e-6), 1 - 1e-6)
        return 1 / (1 + math.exp(-math.log(q / (1 - q)) / temperature))

    total = 0.0
    for b in range(2):
        for c in range(2):
            ps, ts = soften(p[b, c].item()), soften(t[b, c].item())
            total -= ts * math.log(ps + 1e-5) + (1 - ts) * math.log(1 - ps + 1e-5)
    expected = total / 2 * temperature**2
    assert soft_target_loss(p, t, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_the_distilled_loss_mixes_labels_and_soft_targets(tmp_path):
    targets = probabilities(3)
    write_predictions(tmp_path / "t.csv", IDS, targets)
    objective = Objective(
        distill_flags(f"--distill_from={tmp_path / 't.csv'}", "--distill_weight=0.25",
                      "--regularization_penalty=2"), "cpu",
    )  # fmt: skip
    model = torch.nn.Linear(1, 1)
    model.regularization_loss = lambda: torch.tensor(0.5)
    p = probabilities(4).clamp(0.01, 0.99)
    labels = probabilities(5) < 0.3
    batch = {"video_ids": IDS, "labels": labels}
    label, total = objective(model, p, labels, batch, torch.zeros(4, 1, 1), torch.ones(4))
    soft = targets.double().numpy().round(6)
    expected = 0.75 * cross_entropy_loss(p, labels) + 0.25 * soft_target_loss(
        p, torch.from_numpy(soft).float()
    )
    assert label.item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(label.item() + 2 * 0.5, rel=1e-6)


def test_mixture_label_loss_adds_each_branch_as_linrongc_train_py():
    """train.py: label_loss = L(predictions) + sum of L(aux_predictions); final loss =
    regularization_penalty * (regularization_loss incl. cl_lambda * KL + L2) + label_loss."""
    model = MixNeXtVladModel(
        CLASSES, (8, 4), mix_number=2, cl_lambda=9.0, cl_temperature=3.0, cluster_size=4,
        hidden_size=8, groups=2, gating_reduction=2, l2_penalty=1e-3,
    )  # fmt: skip
    inputs = torch.randint(0, 256, (4, 5, 12), dtype=torch.uint8)
    num_frames = torch.tensor([5, 3, 2, 5])
    labels = probabilities(6) < 0.3
    p = model(inputs, num_frames)
    objective = Objective(distill_flags("--regularization_penalty=0.5"), "cpu")
    label, total = objective(model, p, labels, {"video_ids": IDS}, inputs, num_frames)
    mix_logit, logits = model.training_logits
    expected_label = cross_entropy_loss(p, labels) + sum(
        cross_entropy_loss(torch.sigmoid(logits[:, i]), labels) for i in range(2)
    )
    l2 = sum(
        1e-3 * 0.5 * (c.weight.square().sum() + c.bias.square().sum()) for c in model.classifiers
    )
    expected_total = expected_label + 0.5 * (l2 + 9.0 * mutual_distillation(mix_logit, logits, 3.0))
    assert label.item() == pytest.approx(expected_label.item(), rel=1e-6)
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    pattern = write_tiny_training_set(root / "data", 40)
    train(tiny_flags(pattern, root / "teacher", "--max_steps=3"))
    return pattern, root / "teacher"


def test_a_teacher_checkpoint_gives_its_predictions_on_the_batch(teacher_run):
    pattern, teacher_dir = teacher_run
    flags = tiny_flags(pattern, teacher_dir.parent / "student", f"--distill_from={teacher_dir}")
    targets = SoftTargets(flags, torch.device("cpu"))
    batch = next(iter(make_loader(flags, pattern, training=False)))
    key = step_key(sampling_base(0), 7)  # a step's sampling key
    got = targets(batch["video_ids"], batch["inputs"], batch["num_frames"], key)
    teacher, _ = restore_model(teacher_dir, -1, flags, "cpu")
    with torch.no_grad():  # the teachers' own key, from the step's
        expected = teacher(batch["inputs"], batch["num_frames"], step_key(key, 1))
    torch.testing.assert_close(got, expected)


def test_training_a_student_from_files_and_a_teacher(teacher_run, tmp_path):
    pattern, teacher_dir = teacher_run
    flags = tiny_flags(pattern, tmp_path / "x", f"--distill_from={teacher_dir}")
    ids, rows = [], []
    for batch in make_loader(flags, pattern, training=False):
        ids += batch["video_ids"]
        rows.append(probabilities(len(ids), len(batch["video_ids"])))
    write_predictions(tmp_path / "ensemble.csv", ids, torch.cat(rows))
    student = tmp_path / "student"
    argv = [f"--distill_from={tmp_path / 'ensemble.csv'},{teacher_dir}", "--distill_weight=0.7",
            "--distill_temperature=2", "--max_steps=2"]  # fmt: skip
    train(tiny_flags(pattern, student, *argv))
    assert load_checkpoint(latest_checkpoint(student)).step == 2
