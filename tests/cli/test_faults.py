"""Fault injection through the real console commands (subprocesses): for the files the plugin's
commands read -- fairseq checkpoints, packed checkpoints, dict.txt, gradient-norm logs, the zoo's
manifest and bundled files -- truncation, bit flips, wrong versions, non-finite values, a
code-executing pickle and a missing file. Each must give a clear message naming the file, a
non-zero exit, no traceback, and leave every input byte-identical."""
import json
import pickle
import shutil
import sys

import pytest
import torch

from tests.fairseq_utils import ROOT, TINY, console, train

GRAD_LOG = ROOT / "zoo" / "failures" / "ptb-char-bc-none" / "grad_norms.jsonl"


@pytest.fixture(scope="module")
def made(tmp_path_factory, demo_char_data):
    root = tmp_path_factory.mktemp("faults")
    ckpt = train(demo_char_data, root / "run", *TINY, "--quantizer", "tc", "--norm", "weight")
    console("nq-pack", ckpt, root / "packed")
    return root, ckpt, demo_char_data


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def bit_flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def evil_pickle(path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(path.parent / "victim"),))
    (path.parent / "victim").mkdir(exist_ok=True)
    state = torch.load(path, weights_only=True)
    state["extra"] = Evil()
    torch.save(state, path, pickle_module=pickle)


def non_finite(path):
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if k.endswith("weight_hh") or k.endswith("_scale"))
    state["model"][key] = state["model"][key].float().fill_(float("nan"))
    torch.save(state, path)


def wrong_shape(path):
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if k.endswith("weight_hh") or k.endswith("hh_nonzero"))
    state["model"][key] = state["model"][key][:-1].clone()
    torch.save(state, path)


def wrong_version(path):
    state = torch.load(path, weights_only=True)
    state["cfg"]["model"]["packed_format_version"] = 99
    torch.save(state, path)


def check(res, path, *words):
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    assert str(path.name) in out, out[-2000:]
    for w in words:
        assert w in out, out[-2000:]


CHECKPOINT_FAULTS = {"truncated": (truncate, "truncated or corrupt"),
                     "wrong_shape": (wrong_shape, "do not"),
                     "bit_flip": (bit_flip, "corrupt"),
                     "code_executing_pickle": (evil_pickle, "refusing"),
                     "non_finite": (non_finite, "NaN")}


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("command", ["nq-summary", "nq-pack"])
def test_damaged_checkpoint(made, tmp_path, fault, command):
    _, ckpt, _ = made
    path = tmp_path / "checkpoint_best.pt"
    shutil.copyfile(ckpt, path)
    damage, words = CHECKPOINT_FAULTS[fault]
    damage(path)
    before = path.read_bytes()
    args = [path] if command == "nq-summary" else [path, tmp_path / "out"]
    check(console(command, *args, check=False), path, words)
    assert path.read_bytes() == before
    if fault == "code_executing_pickle":
        assert (tmp_path / "victim").is_dir()  # the pickle's code never ran
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["nq-summary", "nq-pack"])
def test_missing_checkpoint(tmp_path, command):
    path = tmp_path / "nowhere.pt"
    args = [path] if command == "nq-summary" else [path, tmp_path / "out"]
    check(console(command, *args, check=False), path, "not found")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "bit_flip", "wrong_version", "non_finite",
                                   "wrong_shape"])
def test_damaged_packed_checkpoint(made, tmp_path, fault):
    root, _, _ = made
    folder = tmp_path / "packed"
    shutil.copytree(root / "packed", folder)
    path = folder / "checkpoint.pt"
    damage = {"truncated": truncate, "bit_flip": bit_flip, "wrong_version": wrong_version,
              "non_finite": non_finite, "wrong_shape": wrong_shape}[fault]
    damage(path)
    before = path.read_bytes()
    res = subprocess_module("nq_plugin.zoo.lm", path, "--prompt", "the", "--length", "5")
    check(res, path, *(["version 99"] if fault == "wrong_version" else []))
    assert path.read_bytes() == before


def subprocess_module(module, *args):
    import subprocess
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated_dict", "missing_dict"])
def test_wrong_dictionary_for_nq_pack(made, tmp_path, fault):
    _, ckpt, data = made
    d = tmp_path / "dict.txt"
    if fault == "truncated_dict":
        lines = (data / "dict.txt").read_text().splitlines()
        d.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    before = d.read_bytes() if d.exists() else None
    res = console("nq-pack", ckpt, tmp_path / "out", "--dict", d, check=False)
    check(res, d, "dict")
    assert (d.read_bytes() if d.exists() else None) == before
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "bit_flip", "missing", "not_a_log"])
def test_damaged_gradient_log(tmp_path, fault):
    path = tmp_path / "grad_norms.jsonl"
    if fault != "missing":
        shutil.copyfile(GRAD_LOG, path)
    if fault == "truncated":  # cut inside the last record, as a killed writer would
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 40])
    elif fault == "bit_flip":
        data = bytearray(path.read_bytes())
        data[10] = 0xFF  # not UTF-8, inside the first record
        path.write_bytes(bytes(data))
    elif fault == "not_a_log":
        path.write_text('{"something": 1}\n')
    before = path.read_bytes() if path.exists() else None
    res = console("nq-analyze", path, "--out", tmp_path / "plots", check=False)
    check(res, path)
    assert (path.read_bytes() if path.exists() else None) == before
    assert not list((tmp_path / "plots").glob("*.png")) if (tmp_path / "plots").exists() else True


@pytest.fixture()
def zoo_copy(tmp_path):
    """A private zoo with the bundled ptb-char-bc-weight model (the real files)."""
    dst = tmp_path / "zoo"
    (dst / "models").mkdir(parents=True)
    shutil.copytree(ROOT / "zoo" / "models" / "ptb-char-bc-weight",
                    dst / "models" / "ptb-char-bc-weight")
    data = json.loads((ROOT / "nq_plugin" / "zoo" / "manifest.json").read_text())
    data["models"] = [m for m in data["models"] if m["name"] == "ptb-char-bc-weight"]
    (dst / "manifest.json").write_text(json.dumps(data))
    import os
    return dst, dict(os.environ, NQ_ZOO_DIR=str(dst), HF_HUB_OFFLINE="1")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "bit_flip", "wrong_version", "missing"])
def test_damaged_zoo_manifest(zoo_copy, fault):
    dst, env = zoo_copy
    path = dst / "manifest.json"
    if fault == "truncated":
        truncate(path)
    elif fault == "bit_flip":
        path.write_text(path.read_text().replace('"models"', '"mod\\u0000els"', 1)
                        .replace("{", "[", 1))
    elif fault == "wrong_version":
        data = json.loads(path.read_text())
        data["manifest_version"] = 99
        path.write_text(json.dumps(data))
    else:
        path.unlink()
    before = path.read_bytes() if path.exists() else None
    check(console("nq-zoo", "list", env=env, check=False), path)
    assert (path.read_bytes() if path.exists() else None) == before


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "bit_flip", "missing"])
def test_damaged_bundled_zoo_file_is_named_and_left_alone(zoo_copy, fault):
    dst, env = zoo_copy
    path = dst / "models" / "ptb-char-bc-weight" / "model.pt"
    {"truncated": truncate, "bit_flip": bit_flip, "missing": lambda p: p.unlink()}[fault](path)
    before = path.read_bytes() if path.exists() else None
    res = console("nq-zoo", "download", "ptb-char-bc-weight", env=env, check=False)
    check(res, path, "git checkout zoo/")
    assert (path.read_bytes() if path.exists() else None) == before


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "wrong_magic"])
def test_damaged_mnist_file_under_fairseq_train(tmp_path, fault):
    """fairseq's own command with the plugin: the plugin's user errors (here a damaged MNIST
    idx file) print as one line naming the file, no traceback (nq_plugin/errors.py)."""
    from tests.data.test_mnist import synthetic
    corrupt = {"truncated": {"truncate": 100}, "wrong_magic": {"magic": 1234}}[fault]
    synthetic(tmp_path, target="train-images-idx3-ubyte", **corrupt)
    path = tmp_path / "train-images-idx3-ubyte"
    before = path.read_bytes()
    res = console("fairseq-train", tmp_path, "--user-dir", ROOT / "nq_plugin", "--task",
                  "sequential_mnist", "--arch", "nq_lstm_classifier_smnist", "--criterion",
                  "sequence_classification", "--pixels-per-step", "28", "--valid-size", "10",
                  "--batch-size", "5", "--max-update", "1", "--cpu", "--save-dir",
                  tmp_path / "ck", "--num-workers", "0", check=False)
    check(res, path)
    assert path.read_bytes() == before


def test_other_errors_keep_their_traceback():
    """Only the plugin's user errors lose the traceback; a bug still shows one."""
    import subprocess
    code = ("import nq_plugin\n"
            "raise RuntimeError('a bug')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" in res.stderr and "a bug" in res.stderr
    code = ("import nq_plugin\nfrom nq_plugin.checkpoint import CheckpointError\n"
            "raise CheckpointError('x.pt is corrupt: copy it again')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "error: x.pt is corrupt: copy it again" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["missing_dir", "missing_dict", "truncated_bin",
                                   "truncated_idx", "missing_split"])
def test_damaged_data_directory_under_fairseq_eval_lm(made, tmp_path, fault):
    _, ckpt, data = made
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    target = {"missing_dir": tmp_path / "nowhere", "missing_dict": folder / "dict.txt",
              "truncated_bin": folder / "valid.bin", "truncated_idx": folder / "valid.idx",
              "missing_split": folder / "valid.bin"}[fault]
    if fault in ("missing_dict", "missing_split"):
        target.unlink()
        (folder / "valid.idx").unlink() if fault == "missing_split" else None
    elif fault.startswith("truncated"):
        truncate(target)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    data_arg = target if fault == "missing_dir" else folder
    res = console("fairseq-eval-lm", data_arg, "--user-dir", ROOT / "nq_plugin", "--task",
                  "bptt_lm", "--path", ckpt, "--cpu", "--gen-subset", "valid",
                  "--tokens-per-sample", "16", "--num-workers", "0", check=False)
    shown = target.name if fault in ("missing_dict", "missing_dir") else "valid"
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out and shown in out, out[-2000:]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("packed", [False, True])
def test_data_of_another_dictionary_under_fairseq_eval_lm(made, tmp_path, packed):
    """A model evaluated on data binarized with another dictionary: named as a dictionary
    mismatch (the model's symbols vs the data's dict.txt), not as a damaged checkpoint."""
    from tests.fairseq_utils import preprocess
    root, ckpt, _ = made
    text = tmp_path / "digits.txt"
    text.write_text("".join(" ".join(str((i * 7 + j) % 10) for j in range(30)) + "\n"
                            for i in range(40)))
    other = preprocess(text, text, tmp_path / "other", testpref=text)
    path = root / "packed" / "checkpoint.pt" if packed else ckpt
    before = path.read_bytes()
    res = console("fairseq-eval-lm", other, "--user-dir", ROOT / "nq_plugin", "--task",
                  "bptt_lm", "--path", path, "--cpu", "--gen-subset", "valid",
                  "--tokens-per-sample", "16", "--num-workers", "0", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out, out[-2000:]
    assert "not the model's dictionary" in out and str(other / "dict.txt") in out, out[-2000:]
    assert "damaged" not in out
    assert path.read_bytes() == before


@pytest.fixture()
def small_filesystem(tmp_path):
    """A 3 MB tmpfs (and a read-only one) at tmp_path: needs mount (root on this project's
    machines)."""
    import subprocess
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    for where, opts in ((full, "size=3m"), (ro, "size=1m,ro")):
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip()})")
    yield full, ro
    for where in (full, ro):
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.slow
def test_nq_pack_onto_a_full_or_read_only_filesystem(small_filesystem):
    """The word model's packed copy (2 x 12 MB) onto 3 MB, and onto a read-only folder: one line
    naming the path (and the space needed), exit 2, no folder of ours left behind."""
    full, ro = small_filesystem
    model = ROOT / "zoo" / "models" / "ptb-word-tc-weight"
    for where, words in ((full, ("No space left", "it needs about", "MB are free")),
                         (ro, ("Read-only file system", "choose a folder you can write to"))):
        res = console("nq-pack", model / "model.pt", where / "packed", "--dict",
                      model / "dict.txt", check=False)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert str(where / "packed") in lines[0] or str(where) in lines[0], lines[0]
        for w in words:
            assert w in lines[0], lines[0]
        assert list(where.iterdir()) == []  # nothing half-made, no empty folder
