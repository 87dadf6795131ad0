"""The recipes' data preparation on stand-ins made here with the real files' traits (War and
Peace and text8 are not on these machines), and custom_text end to end on shipped text."""
import hashlib
import os
import resource
import subprocess
import sys
import zipfile

import pytest
import torch

from tests.fairseq_utils import DEMO_TEXT, ROOT, TINY, eval_lm, train

RECIPES = ROOT / "recipes"


def run(*argv, check=True):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    res = subprocess.run(["bash", *map(str, argv)], capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise AssertionError(res.stdout[-2000:] + res.stderr[-2000:])
    return res


def stream(folder, split):
    from fairseq.data import Dictionary, data_utils
    from nq_plugin.data.symbol_corpus import symbol_byte
    d = Dictionary.load(str(folder / "dict.txt"))
    ds = data_utils.load_indexed_dataset(str(folder / split), d)
    ids = torch.cat([ds[i] for i in range(len(ds))]).tolist()
    return bytes(symbol_byte(d[i]) for i in ids), d


def test_warpeace_preparation_keeps_every_byte(tmp_path):
    text = ("\ufeffBOOK ONE: 1805\r\n\r\nCHAPTER I\r\n\r\n\"Well, Prince, so Genoa and Lucca are "
            "now just family estates of the Buonapartes.\"  Anna Pávlovna Schérer said\r\n"
            "in French: «Je vous avertis»\t— 100 roubles\r\n") * 300
    raw = text.encode("utf-8")
    src = tmp_path / "warpeace_input.txt"
    src.write_bytes(raw)
    run(RECIPES / "warpeace" / "prepare.sh", tmp_path / "out", src,
        "--sha256", hashlib.sha256(raw).hexdigest(), "--size", len(raw))
    out = tmp_path / "out" / "warpeace"
    parts, sizes = [], []
    for split in ("train", "valid", "test"):
        data, d = stream(out, split)
        parts.append(data)
        sizes.append(len(data))
    assert b"".join(parts) == raw  # nothing lost or added: BOM, CR, LF, tabs, UTF-8 bytes
    assert sizes == [int(len(raw) * 0.8), int(len(raw) * 0.9) - int(len(raw) * 0.8),
                     len(raw) - int(len(raw) * 0.9)]
    assert len(d) - d.nspecial == len(set(raw))  # one symbol per distinct byte
    for s in ("<0xEF>", "<0xBB>", "<0xBF>", "<0x0D>", "<0x0A>", "<0x20>", "<0x09>"):
        assert d.index(s) != d.unk()
    ckpt = train(out, tmp_path / "ckpt", *TINY, arch="nq_lstm_lm_warpeace", updates=2)
    assert ckpt.exists()
    # a zoo card's evaluation text (format "bytes") binarized for it; fairseq-eval-lm scores
    # every byte of it (none added: no end-of-sentence symbols, as in training)
    from types import SimpleNamespace
    from nq_plugin.zoo.evaluate import binarize_eval_text
    (out / "eval").mkdir()
    (out / "eval" / "eval.txt").write_text(text[:2000].replace("«", "\""), encoding="utf-8")
    bin_dir = binarize_eval_text(SimpleNamespace(eval_text="eval/eval.txt", text_format="bytes"),
                                 str(out), str(tmp_path / "work"))
    r = eval_lm(bin_dir, ckpt, "--gen-subset", "test", "--tokens-per-sample", "50")
    assert 0 < r["loss"] < 20
    assert stream(tmp_path / "work" / "bin", "test")[0] == text[:2000].replace(
        "«", "\"").encode("utf-8")
    # the real file's checksum is enforced by default
    bad = run(RECIPES / "warpeace" / "prepare.sh", tmp_path / "out2", src, check=False)
    assert bad.returncode != 0 and "not the original file" in bad.stderr
    assert "Traceback" not in bad.stderr


def _text8_zip(path, n):
    words = b"anarchism originated as a term of abuse first used against early working class "
    body = (words * (n // len(words) + 1))[:n]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("text8", body)
    return body


def test_text8_preparation_streams_one_long_line(tmp_path):
    n = 20_000_000  # one line, like the real 100M: held as Python strings it would take GBs
    zpath = tmp_path / "text8.zip"
    body = _text8_zip(zpath, n)
    cmd = [RECIPES / "text8" / "prepare.sh", tmp_path / "out", zpath, "--size", n,
           "--download-size", os.path.getsize(zpath), "--split-sizes", 18_000_000, 1_000_000,
           1_000_000]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    run(*cmd)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 1200 or before / 1024 >= 1200, f"peak RSS {peak_mb:.0f} MB"
    out = tmp_path / "out" / "text8"
    valid, d = stream(out, "valid")
    assert valid == body[18_000_000:19_000_000]
    assert len(d) - d.nspecial == len(set(body)) <= 27
    # the zip's size is checked, and so is the alphabet
    wrong = run(RECIPES / "text8" / "prepare.sh", tmp_path / "o3", zpath, "--size", n,
                check=False)
    assert wrong.returncode != 0 and "31344016" in wrong.stderr
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("text8", b"Not Lowercase " * 100)
    bad = run(RECIPES / "text8" / "prepare.sh", tmp_path / "o4", other, "--size", 1400,
              "--download-size", os.path.getsize(other), "--split-sizes", 1200, 100, 100,
              check=False)
    assert bad.returncode != 0 and "alphabet" in bad.stderr


def test_custom_text_end_to_end(tmp_path):
    plain = [l.replace(" ", "").replace("_", " ").strip()
             for l in (DEMO_TEXT / "train.txt").read_text().splitlines()]
    news = (ROOT / "zoo" / "eval_text" / "news_en.txt").read_text().splitlines()
    src = tmp_path / "my_text.txt"
    src.write_text("\n".join(plain + news) + "\n")
    run(RECIPES / "custom_text" / "prepare.sh", src, tmp_path / "data", 150)
    data = tmp_path / "data" / "bin"
    assert (data / "spm.model").exists() and (data / "test.bin").exists()
    ckpt = train(data, tmp_path / "ckpt", "--hidden-size", "24", "--embed-dim", "24",
                 "--batch-size", "2", "--tokens-per-sample", "8", "--quantizer", "tc",
                 "--norm", "layer", arch="nq_lstm_lm_ptb_word", updates=3)
    results = eval_lm(data, ckpt, "--tokens-per-sample", "8", "--gen-subset", "test")
    assert 1 < results["perplexity"] < 1000
    out = run(RECIPES / "custom_text" / "generate.sh", data, ckpt, "the company", 30).stdout
    text = out.strip().splitlines()[-1]
    assert text.startswith("the company") and len(text) > len("the company") + 5
    assert "▁" not in out  # pieces decoded back to text
