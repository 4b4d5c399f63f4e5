"""`yt8m export` (successors.md §3: the 2018 rule of 1 GB, float16/bfloat16 weights): the
file round-trips into eval and infer, the size check refuses an oversized file, and the
predictions of the half-precision exports stay within the stated tolerance of float32."""

import json

import pytest
import torch
from safetensors import safe_open

from tests.test_train import CLASSES, tiny_argv
from yt8m.checkpoint import latest_checkpoint, load_checkpoint, restore_model
from yt8m.cli import main as cli_main
from yt8m.data.loader import make_loader
from yt8m.data.synthetic import write_dataset
from yt8m.evaluate import evaluate
from yt8m.export import ExportError, load_exported_model, main, write_export
from yt8m.flags import parse_flags
from yt8m.inference import infer
from yt8m.models.sampling import sampling_base
from yt8m.train import train

# The stated tolerance: the largest change of a probability from float32 weights. Measured
# on the tiny models below (2026-12-01): gated NetVLAD 7.6e-5 (float16) and 4.9e-4
# (bfloat16), NeXtVLAD 1.6e-4 and 2.4e-3.
TOLERANCE = {"float32": 0.0, "float16": 1e-3, "bfloat16": 1e-2}
NEXTVLAD = [
    "--model=NeXtVLADModel", "--video_level_classifier_model=LogisticModel",
    "--nextvlad_cluster_size=4", "--nextvlad_hidden_size=16", "--groups=4",
    "--gating_reduction=4", "--l2_penalty=1e-5",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    patterns = write_dataset(
        root / "data", videos={"train": 60, "validate": 30}, shards=2, classes=CLASSES,
        frames=(3, 10), feature_sizes=(16, 8), levels=("frame",),
    )["frame"]  # fmt: skip
    return root, patterns


def trained(data, name: str, *extra: str):
    root, patterns = data
    train_dir = root / name
    if latest_checkpoint(train_dir) is None:
        train(parse_flags(tiny_argv(patterns["train"], train_dir, "--max_steps=20", *extra)))
    return train_dir


def predictions(train_dir_or_file, patterns) -> torch.Tensor:
    flags = parse_flags(["--deterministic_sampling"])
    model, checkpoint = restore_model(train_dir_or_file, -1, flags, "cpu")
    model.deterministic_sampling = True
    out = []
    with torch.no_grad():
        for batch in make_loader(checkpoint.flags, patterns["validate"], training=False):
            out.append(model(batch["inputs"], batch["num_frames"], sampling_base(0)))
    return torch.cat(out)


@pytest.mark.parametrize("model", ["netvlad", "nextvlad"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_export_round_trip_within_the_stated_tolerance(data, tmp_path, model, dtype):
    train_dir = trained(data, model, *(NEXTVLAD if model == "nextvlad" else []))
    output = tmp_path / f"{model}-{dtype}.safetensors"
    size = write_export(load_checkpoint(latest_checkpoint(train_dir)), output, dtype)
    assert size == output.stat().st_size
    exported = load_exported_model(output)
    assert {t.dtype for t in exported.model_state.values() if t.is_floating_point()} == {
        getattr(torch, dtype)
    }
    reference = predictions(train_dir, data[1])
    got = predictions(output, data[1])
    difference = (got - reference).abs().max().item()
    assert difference <= TOLERANCE[dtype], difference
    if dtype == "float32":
        assert difference == 0


def test_half_precision_stores_two_bytes_per_weight(data, tmp_path):
    checkpoint = load_checkpoint(latest_checkpoint(trained(data, "nextvlad", *NEXTVLAD)))
    state = checkpoint.model_state
    weights = sum(t.numel() for t in state.values() if t.is_floating_point())
    counters = sum(8 * t.numel() for t in state.values() if not t.is_floating_point())
    for dtype, width in (("float32", 4), ("bfloat16", 2), ("float16", 2)):
        path = tmp_path / f"{dtype}.safetensors"
        size = write_export(checkpoint, path, dtype)
        header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        assert size - header == width * weights + counters


def test_size_check_refuses_and_writes_nothing(data, tmp_path, capsys):
    train_dir = trained(data, "netvlad")
    output = tmp_path / "model.safetensors"
    assert main([f"--train_dir={train_dir}", "--dtype=float16", f"--output={output}"]) == 0
    size = output.stat().st_size
    assert f"{output}: {size} bytes (float16" in capsys.readouterr().out
    output.unlink()
    argv = [f"--train_dir={train_dir}", f"--output={output}", f"--max_bytes={size - 1}"]
    with pytest.raises(ExportError, match=f"{size * 2 - 100:,}|over --max_bytes={size - 1:,}"):
        main([*argv, "--dtype=float32"])
    assert not output.exists() and not list(tmp_path.iterdir())
    assert cli_main(["export", *argv, "--dtype=float16"]) == 2  # one byte over the limit
    assert "over --max_bytes" in capsys.readouterr().err
    argv[-1] = f"--max_bytes={size}"
    assert cli_main(["export", *argv, "--dtype=float16"]) == 0 and output.stat().st_size == size


def test_metadata_holds_the_flags_and_which_weights(data, tmp_path):
    train_dir = trained(data, "ema", "--ema_decay=0.5")
    for use_ema, weights in (("True", "ema"), ("False", "raw")):
        output = tmp_path / f"{weights}.safetensors"
        main([f"--train_dir={train_dir}", f"--output={output}", f"--use_ema={use_ema}"])
        with safe_open(str(output), "pt") as f:
            meta = f.metadata()
        assert meta["weights"] == weights and meta["step"] == "20"
        assert json.loads(meta["flags"])["model"] == "NetVLADModelLF"
    checkpoint = load_checkpoint(latest_checkpoint(train_dir))
    raw = load_exported_model(tmp_path / "raw.safetensors").model_state
    ema = load_exported_model(tmp_path / "ema.safetensors").model_state
    name = "video_pooling.centers"
    assert torch.equal(raw[name], checkpoint.model_state[name])
    assert torch.equal(ema[name], checkpoint.ema_state[name])


def test_eval_and_infer_accept_the_file_as_train_dir(data, tmp_path):
    root, patterns = data
    output = tmp_path / "model.safetensors"
    main([f"--train_dir={trained(data, 'netvlad')}", f"--output={output}", "--dtype=bfloat16"])
    common = ["--num_readers=0", "--progress=False", f"--train_dir={output}"]
    (result,) = evaluate(parse_flags([*common, f"--eval_data_pattern={patterns['validate']}"]))
    assert result["step"] == 20 and result["num_videos"] == 30
    submission = tmp_path / "s.csv"
    flags = [*common, f"--input_data_pattern={patterns['validate']}", f"--output_file={submission}"]
    infer(parse_flags(flags, "infer"))
    assert len(submission.read_text().splitlines()) == 31


def test_a_foreign_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ExportError, match="cannot be read as an exported model"):
        load_exported_model(bad)
    with pytest.raises(ExportError, match="must end in .safetensors"):
        main(["--train_dir=x", "--output=model.pt"])


def test_a_flipped_byte_inside_an_exported_weight_is_an_error(tmp_path):
    """Like a checkpoint (issue 11 case 7), an export carries a CRC32C per tensor in its
    metadata, verified when eval/infer load it: a damaged weight is never used silently."""
    from tests.test_checkpoint_checksum import flip_byte_inside
    from yt8m.checkpoint import save_checkpoint
    from yt8m.models.registry import build_model

    flags = parse_flags(["--model=LogisticModel", "--num_classes=3", "--feature_sizes=4,2"])
    torch.manual_seed(0)
    model = build_model(flags)
    save_checkpoint(tmp_path / "run", 5, model, flags)
    output = tmp_path / "model.safetensors"
    main([f"--train_dir={tmp_path / 'run'}", f"--output={output}"])
    assert torch.equal(load_exported_model(output).model_state["classifier.weight"],
                       model.classifier.weight)  # fmt: skip
    flip_byte_inside(output, model.classifier.weight)
    with pytest.raises(ExportError, match=r"model.safetensors is damaged: its entry "
                       r"model/classifier.weight"):  # fmt: skip
        restore_model(output, -1, flags, "cpu")


def test_replacing_an_existing_export_is_said(tmp_path, capsys):
    """Issue 11 case 4's rule for every output: a file replaced is said."""
    from yt8m.checkpoint import save_checkpoint
    from yt8m.models.registry import build_model

    flags = parse_flags(["--model=LogisticModel", "--num_classes=3", "--feature_sizes=4,2"])
    save_checkpoint(tmp_path / "run", 5, build_model(flags), flags)
    output = tmp_path / "model.safetensors"
    argv = [f"--train_dir={tmp_path / 'run'}", f"--output={output}"]
    assert main(argv) == 0 and "replaced the existing" not in capsys.readouterr().err
    assert main(argv) == 0
    assert f"replaced the existing {output}" in capsys.readouterr().err


def test_a_file_exported_before_the_checksums_loads_with_a_warning(tmp_path, caplog):
    from safetensors.torch import save_file

    from yt8m.checkpoint import save_checkpoint
    from yt8m.models.registry import build_model

    flags = parse_flags(["--model=LogisticModel", "--num_classes=3", "--feature_sizes=4,2"])
    save_checkpoint(tmp_path / "run", 5, build_model(flags), flags)
    output = tmp_path / "model.safetensors"
    main([f"--train_dir={tmp_path / 'run'}", f"--output={output}"])
    with safe_open(str(output), "pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "checksums"}
    save_file(load_exported_model(output).model_state, str(output), metadata)
    with caplog.at_level("WARNING"):
        assert load_exported_model(output).step == 5
    assert "model.safetensors has no checksums (exported before they existed)" in caplog.text
