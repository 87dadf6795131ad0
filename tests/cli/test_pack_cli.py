"""nq-pack: export, fairseq-eval-lm on the packed checkpoint, sizes, tampering."""
import json
import math

import pytest
import torch

from nq_plugin.cli.pack import main as pack_main
from nq_plugin.packed.format import PackedFormatError
from nq_plugin.packed.io import load_packed
from tests.fairseq_utils import TINY, console, eval_lm, train


@pytest.mark.parametrize("quantizer,norm,stats", [
    ("bc", "weight", "shared"), ("tc", "batch", "separate"), ("lat", "power", "shared"),
    ("bwn", "layer", "shared"), ("fp", "none", "shared"),
])
def test_packed_checkpoint_evaluates_to_the_same_perplexity(demo_char_data, tmp_path, quantizer,
                                                           norm, stats):
    ckpt = train(demo_char_data, tmp_path / "ck", *TINY, "--quantizer", quantizer, "--norm",
                 norm, "--bn-stats", stats, "--bn-max-steps", "8", updates=4)
    assert pack_main([str(ckpt), str(tmp_path / "packed")]) == 0
    packed = eval_lm(demo_char_data, tmp_path / "packed" / "checkpoint.pt",
                     "--tokens-per-sample", "16")
    unpacked = eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "16")
    assert f"{packed['perplexity']:.4g}" == f"{unpacked['perplexity']:.4g}"
    assert math.isclose(packed["loss"], unpacked["loss"], abs_tol=1e-5)


def test_packed_bytes_match_summary_up_to_padding(demo_char_data, tmp_path):
    ckpt = train(demo_char_data, tmp_path / "ck", *TINY, "--quantizer", "bc", "--norm", "weight")
    console("nq-pack", ckpt, tmp_path / "packed")
    tensors, config = load_packed(str(tmp_path / "packed"))
    words = sum(v.numel() * 4 for k, v in tensors.items() if k.endswith("_plus"))
    summary = json.loads(console("nq-summary", ckpt, "--json").stdout.strip().splitlines()[-1])
    layer = summary["layers"][0]
    one_bit = int(layer["counts_by_bits"]["1"])
    rows = 4 * layer["hidden_size"]
    padding_bits = rows * sum((-n) % 32 for n in (layer["input_size"], layer["hidden_size"]))
    assert words * 8 == one_bit + padding_bits  # documented: zero bits up to a multiple of 32
    assert config["quantization_config"]["format_version"] == 1
    assert (tmp_path / "packed" / "dict.txt").read_text() == (demo_char_data / "dict.txt").read_text()


@pytest.fixture()
def packed_dir(demo_char_data, tmp_path):
    ckpt = train(demo_char_data, tmp_path / "ck", *TINY, "--quantizer", "tc", "--norm", "layer")
    assert pack_main([str(ckpt), str(tmp_path / "packed")]) == 0
    return tmp_path / "packed", ckpt


def test_tampered_config_is_refused(packed_dir):
    outdir, _ = packed_dir
    path = outdir / "config.json"
    original = json.loads(path.read_text())
    bad = json.loads(path.read_text())
    bad["quantization_config"]["format_version"] = 2
    path.write_text(json.dumps(bad))
    with pytest.raises(PackedFormatError, match="version 2.*re-pack"):
        load_packed(str(outdir))
    bad = json.loads(json.dumps(original))
    bad["quantization_config"]["layers"][0]["hidden_size"] = 48
    path.write_text(json.dumps(bad))
    with pytest.raises(PackedFormatError, match="do not belong together"):
        load_packed(str(outdir))
    bad = json.loads(json.dumps(original))
    bad["quantization_config"]["layers"][0]["hh_bits"] = 1
    path.write_text(json.dumps(bad))
    with pytest.raises(PackedFormatError, match="lacks"):
        load_packed(str(outdir))
    path.write_text("{not json")
    with pytest.raises(PackedFormatError, match="not valid JSON"):
        load_packed(str(outdir))
    path.write_text(json.dumps(original))
    load_packed(str(outdir))  # intact again


def test_truncated_files_are_refused(packed_dir):
    outdir, _ = packed_dir
    weights = outdir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PackedFormatError, match="truncated or corrupt"):
        load_packed(str(outdir))
    ckpt = outdir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    res = console("nq-summary", ckpt, check=False)
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr


def test_existing_outdir_is_not_overwritten(packed_dir):
    outdir, ckpt = packed_dir
    before = (outdir / "model.safetensors").read_bytes()
    res = console("nq-pack", ckpt, outdir, check=False)
    assert res.returncode == 2 and "--force" in res.stderr
    assert (outdir / "model.safetensors").read_bytes() == before
    res = console("nq-pack", outdir / "checkpoint.pt", outdir / "again", check=False)
    assert res.returncode == 2 and "already packed" in res.stderr


def test_force_never_overwrites_an_input_or_a_foreign_file(packed_dir, demo_char_data, tmp_path):
    """Regression: --force into the checkpoint's own folder replaced the trained checkpoint.pt;
    into the data directory it wrote files there and died with SameFileError."""
    import shutil
    _, ckpt = packed_dir
    own = tmp_path / "run"
    own.mkdir()
    shutil.copyfile(ckpt, own / "checkpoint.pt")
    trained = (own / "checkpoint.pt").read_bytes()
    res = console("nq-pack", own / "checkpoint.pt", own, "--force", check=False)
    assert res.returncode == 2 and "input of this command" in res.stderr
    assert (own / "checkpoint.pt").read_bytes() == trained
    assert sorted(p.name for p in own.iterdir()) == ["checkpoint.pt"]
    data_files = sorted(p.name for p in demo_char_data.iterdir())
    res = console("nq-pack", ckpt, demo_char_data, "--force", check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert sorted(p.name for p in demo_char_data.iterdir()) == data_files
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"mine": true}')
    res = console("nq-pack", ckpt, foreign, "--force", check=False)
    assert res.returncode == 2 and "did not write" in res.stderr
    assert (foreign / "config.json").read_text() == '{"mine": true}'


def test_packed_checkpoint_checks_its_own_format_version(packed_dir, demo_char_data):
    """Regression: fairseq-eval-lm on OUTDIR/checkpoint.pt never checked a format version."""
    outdir, _ = packed_dir
    state = torch.load(outdir / "checkpoint.pt", weights_only=True)
    assert state["cfg"]["model"]["packed_format_version"] == 1
    state["cfg"]["model"]["packed_format_version"] = 99
    torch.save(state, outdir / "checkpoint.pt")
    with pytest.raises(PackedFormatError, match="version 99"):
        eval_lm(demo_char_data, outdir / "checkpoint.pt", "--tokens-per-sample", "16")


@pytest.mark.slow
def test_sequence_classifier_packs_and_validates_to_the_same_accuracy(tmp_path):
    """nq-pack on an nq_lstm_classifier checkpoint (sequential MNIST, 28 pixels per step, 2-bit
    weights, per-step statistics): the packed model's logits equal the unpacked model's, and
    fairseq-validate gives the same loss and accuracy through the real commands."""
    quantizer, norm, stats = "tc", "batch", "separate"
    import re
    from nq_plugin.models.loading import load_model
    from tests.data.test_mnist import synthetic
    data = tmp_path / "mnist"
    data.mkdir()
    synthetic(data, n_train=40, n_test=16)
    common = ["--user-dir", "nq_plugin", "--task", "sequential_mnist", "--pixels-per-step", "28",
              "--valid-size", "16", "--criterion", "sequence_classification", "--cpu"]
    console("fairseq-train", data, *common, "--arch", "nq_lstm_classifier_smnist",
            "--hidden-size", "24", "--quantizer", quantizer, "--norm", norm, "--bn-stats", stats,
            "--bn-max-steps", "28", "--init-state-noise", "0.1", "--optimizer", "nq_adam",
            "--lr", "0.01", "--batch-size", "8", "--max-update", "3", "--save-dir",
            tmp_path / "ck", "--no-epoch-checkpoints")
    ckpt = tmp_path / "ck" / "checkpoint_last.pt"
    out = console("nq-pack", ckpt, tmp_path / "packed").stdout
    assert "LSTM weights" in out  # W_x stays fp32 (scalar-pixel inputs), W_h packed
    assert not (tmp_path / "packed" / "dict.txt").exists()
    unpacked, _ = load_model(str(ckpt))
    packed, _ = load_model(str(tmp_path / "packed" / "checkpoint.pt"))
    assert type(packed).__name__ == "NQLSTMPackedClassifier"
    pixels = torch.rand(5, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(packed(pixels), unpacked(pixels), atol=1e-5, rtol=0)
    results = []
    for path in (ckpt, tmp_path / "packed" / "checkpoint.pt"):
        res = console("fairseq-validate", data, *common, "--path", path, "--valid-subset",
                      "test", "--batch-size", "8")
        line = re.search(r"valid on 'test' subset \| loss ([0-9.]+) .*?accuracy ([0-9.]+)",
                         res.stdout + res.stderr)
        assert line, res.stdout[-2000:] + res.stderr[-2000:]
        results.append(line.groups())
    assert results[0] == results[1]


def test_packing_is_byte_reproducible(packed_dir, tmp_path):
    """The same checkpoint packs to the same bytes (the zoo rebuilds packed copies it leaves
    out of the bundle and checks them by SHA-256): safetensors' metadata comes out sorted, and
    checkpoint.pt's archive is not named after the temporary file."""
    first, ckpt = packed_dir
    assert pack_main([str(ckpt), str(tmp_path / "again")]) == 0
    for name in ("model.safetensors", "config.json", "checkpoint.pt", "dict.txt"):
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    raw = (first / "model.safetensors").read_bytes()  # the header as written (safetensors'
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # reader reorders it)
    meta = header["__metadata__"]
    assert list(meta) == sorted(meta) and meta["format"] == "nq-packed"


def test_fp16_weights_outside_the_lstm_stay_fp16(demo_char_data, tmp_path):
    """A checkpoint storing its softmax in fp16 (nq-zoo add --half-embeddings) packs with it in
    fp16 -- half the bytes, the same numbers: the model loads it into fp32 either way."""
    ckpt = train(demo_char_data, tmp_path / "ck", *TINY, "--quantizer", "tc", "--norm", "weight")
    state = torch.load(ckpt, weights_only=False)
    key = "decoder.output_projection.weight"
    state["model"][key] = state["model"][key].half()
    half = tmp_path / "half.pt"
    torch.save(state, half)
    assert pack_main([str(half), str(tmp_path / "packed"), "--dict",
                      str(demo_char_data / "dict.txt")]) == 0
    tensors, config = load_packed(str(tmp_path / "packed"))
    assert tensors[key].dtype == torch.float16
    assert torch.equal(tensors[key], state["model"][key])
    assert tensors["decoder.lstm.layers.0.bias"].dtype == torch.float32
    assert key in config["quantization_config"]["other_weights"]
    packed = eval_lm(demo_char_data, tmp_path / "packed" / "checkpoint.pt",
                     "--tokens-per-sample", "16")
    unpacked = eval_lm(demo_char_data, half, "--tokens-per-sample", "16")
    assert math.isclose(packed["loss"], unpacked["loss"], abs_tol=1e-5)
