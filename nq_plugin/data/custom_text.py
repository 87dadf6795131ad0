"""A user's own raw text -> sentencepiece subwords -> fairseq-binarized data for ``bptt_lm``.

Lines are split in file order into train / valid / test (by default the last 5 % and 5 % of
the lines are valid and test); a sentencepiece model is trained on the training lines only
(vocabulary size an option), every split is encoded into pieces and binarized with
``fairseq-preprocess --only-source``. The sentencepiece model is copied next to ``dict.txt`` so
that generated pieces can be decoded back to text (``text_format = "spm:PATH"``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict

from ..files import atomic_folder


def prepare(text_path: str, out_dir: str, vocab_size: int = 8000, valid: float = 0.05,
            test: float = 0.05) -> Dict[str, int]:
    import sentencepiece as spm

    if not os.path.isfile(text_path):
        raise FileNotFoundError(f"{text_path} not found")
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder")
    lines = [l.rstrip("\n") for l in open(text_path, encoding="utf-8") if l.strip()]
    if len(lines) < 20:
        raise ValueError(f"{text_path} has {len(lines)} non-empty lines; need at least 20 to "
                         "cut train / valid / test splits")
    n_valid, n_test = max(1, int(len(lines) * valid)), max(1, int(len(lines) * test))
    splits = {"train": lines[: len(lines) - n_valid - n_test],
              "valid": lines[len(lines) - n_valid - n_test: len(lines) - n_test],
              "test": lines[len(lines) - n_test:]}
    with atomic_folder(out_dir) as tmp:  # built beside OUT, renamed into place when complete
        _build(splits, tmp, vocab_size)
    return {name: len(part) for name, part in splits.items()}


def _build(splits, out_dir: str, vocab_size: int) -> None:
    import sentencepiece as spm
    raw = os.path.join(out_dir, "raw")
    os.makedirs(raw)
    for name, part in splits.items():
        with open(os.path.join(raw, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    prefix = os.path.join(out_dir, "spm")
    spm.SentencePieceTrainer.train(
        input=os.path.join(raw, "train.txt"), model_prefix=prefix, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    for name in splits:
        with open(os.path.join(raw, f"{name}.txt"), encoding="utf-8") as src, \
                open(os.path.join(raw, f"{name}.spm"), "w", encoding="utf-8") as dst:
            for line in src:
                dst.write(" ".join(sp.encode(line.rstrip("\n"), out_type=str)) + "\n")
    bin_dir = os.path.join(out_dir, "bin")
    exe = shutil.which("fairseq-preprocess", path=os.path.dirname(sys.executable)) or \
        "fairseq-preprocess"
    subprocess.run([exe, "--only-source", "--trainpref", os.path.join(raw, "train.spm"),
                    "--validpref", os.path.join(raw, "valid.spm"), "--testpref",
                    os.path.join(raw, "test.spm"), "--destdir", bin_dir, "--workers", "1"],
                   check=True, capture_output=True)
    shutil.copyfile(prefix + ".model", os.path.join(bin_dir, "spm.model"))


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m nq_plugin.data.custom_text",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("text", help="raw UTF-8 text, one sentence or paragraph per line")
    p.add_argument("out", help="new folder: raw/, spm.model, bin/ (the fairseq data)")
    p.add_argument("--vocab-size", type=int, default=8000)
    a = p.parse_args(argv)
    try:
        sizes = prepare(a.text, a.out, a.vocab_size)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"custom_text: {err}", file=sys.stderr)
        return 2
    print(f"custom_text: lines " + ", ".join(f"{k} {v}" for k, v in sizes.items())
          + f"; data in {os.path.join(a.out, 'bin')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
