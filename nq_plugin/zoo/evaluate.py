"""Evaluating zoo models the way their cards say: ``fairseq-eval-lm`` (``fairseq-validate`` for
a classifier) run as a console command on a verified checkpoint, the metric read from its
output. The library behind ``nq-zoo eval``, ``nq-zoo add`` and the training campaign."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .manifest import ZooEntry, ZooError


def tool(name: str) -> str:
    """The console command ``name`` of this environment (beside its Python first)."""
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if exe is None:
        raise ZooError(f"{name} not found: install nq_plugin with its dependencies "
                       "(pip install -e .)")
    return exe


def user_dir() -> str:
    """The plugin's folder, for ``--user-dir``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(argv: List[str]) -> str:
    """Run a console command; its output, or a ZooError with its last lines."""
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise ZooError(f"{os.path.basename(argv[0])} failed ({res.returncode}):\n"
                       + (res.stderr or res.stdout)[-2000:])
    return res.stdout + res.stderr


def binarize_eval_text(entry: ZooEntry, folder: str, out: str) -> str:
    """The model's bundled evaluation text in its symbol format, binarized with its dict.txt
    as the ``test`` split of a new data folder under ``out`` (returned): with
    fairseq-preprocess for a line format, byte by byte for a stream format (``bytes``)."""
    from .text_formats import encode, text_format
    src = os.path.join(folder, *entry.eval_text.split("/"))
    dict_path = os.path.join(folder, "dict.txt")
    if not text_format(entry.text_format).lines:
        from ..data.symbol_corpus import binarize_with_dictionary
        binarize_with_dictionary(src, dict_path, os.path.join(out, "bin"))
        return os.path.join(out, "bin")
    lines = [" ".join(encode(entry.text_format, line))
             for line in open(src, encoding="utf-8").read().splitlines() if line.strip()]
    raw = os.path.join(out, "eval.txt")
    with open(raw, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    run_tool([tool("fairseq-preprocess"), "--only-source", "--srcdict", dict_path,
              "--testpref", raw, "--destdir", os.path.join(out, "bin"), "--workers", "1"])
    return os.path.join(out, "bin")


def parse_eval_lm(output: str) -> dict:
    m = re.search(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)", output)
    if not m:
        raise ZooError("fairseq-eval-lm printed no 'Loss (base 2)' line:\n" + output[-2000:])
    return {"bits": float(m.group(1)), "perplexity": float(m.group(2))}


def parse_validate(output: str, subset: str = "test") -> float:
    """The accuracy fairseq-validate printed for ``subset``."""
    m = re.search(rf"valid on '{re.escape(subset)}' subset.*?accuracy ([0-9.]+)", output)
    if not m:
        raise ZooError(f"fairseq-validate printed no {subset} accuracy:\n" + output[-2000:])
    return float(m.group(1))


def checkpoint_path(entry: ZooEntry, folder: str, packed: bool = False,
                    cache_dir: Optional[str] = None) -> str:
    """The model's checkpoint in its verified ``folder``, or its packed copy's (rebuilt and
    verified first where the bundle leaves it out: zoo/derive.py)."""
    if not packed:
        return os.path.join(folder, entry.checkpoint)
    from .derive import packed_folder
    return os.path.join(packed_folder(entry, folder, cache_dir), "checkpoint.pt")


@dataclass
class Evaluation:
    """One evaluation of a checkpoint: the metric's value, the command as the card shows it
    (paths replaced by placeholders) and the tool's whole output (the log)."""
    value: float
    command: str
    output: str

    @property
    def log(self) -> str:
        return f"$ {self.command}\n{self.output}"


def evaluate_checkpoint(checkpoint: str, data: str, metric: str, eval_args: Sequence[str],
                        tool_name: str = "fairseq-eval-lm",
                        shown_path: str = "model.pt") -> Evaluation:
    """``tool_name`` (fairseq-eval-lm or fairseq-validate) on ``checkpoint`` with ``data``; the
    value of ``metric`` (bpc, perplexity or accuracy) it printed."""
    out = run_tool([tool(tool_name), data, "--user-dir", user_dir(), "--path", checkpoint,
                    *eval_args])
    if metric == "accuracy":
        args = list(eval_args)
        subset = args[args.index("--valid-subset") + 1] if "--valid-subset" in args else "test"
        value = parse_validate(out, subset)
    else:
        r = parse_eval_lm(out)
        value = r["bits"] if metric == "bpc" else r["perplexity"]
    command = (f"{tool_name} DATA_BIN --user-dir NQ_PLUGIN_DIR --path {shown_path} "
               + " ".join(eval_args))
    return Evaluation(value, command, out)


def evaluation_tool(metric: str) -> str:
    """The fairseq command that measures ``metric``."""
    return "fairseq-validate" if metric == "accuracy" else "fairseq-eval-lm"


def evaluate(entry: ZooEntry, folder: str, data: Optional[str], packed: bool = False,
             cache_dir: Optional[str] = None) -> dict:
    """The entry's metric on its verified ``folder``: on the test split of ``data`` (a binarized
    folder, checked to hold the model's dictionary), else on the evaluation text the model
    ships (binarized here). Returns name, value and a sentence on the data."""
    from ..files import sha256_file
    ckpt = checkpoint_path(entry, folder, packed, cache_dir)
    metric = entry.metric
    if metric.name == "accuracy":
        if not data:
            raise ZooError(f"{entry.name}: pass --data with the MNIST folder of "
                           "recipes/smnist/prepare.sh (MNIST is not bundled)")
        r = evaluate_checkpoint(ckpt, data, metric.name, metric.eval_args, "fairseq-validate")
        return {"name": "accuracy", "value": r.value, "data": data}
    with tempfile.TemporaryDirectory(prefix="nq-zoo-eval-") as tmp:
        if data:
            dict_path = os.path.join(data, "dict.txt")
            if not os.path.isfile(dict_path):
                raise ZooError(f"--data {data} has no dict.txt: give the binarized folder of the "
                               "recipe's prepare.sh (e.g. data-bin/ptb_char)")
            if sha256_file(dict_path) != entry.dictionary_sha256:
                raise ZooError(f"{dict_path} is not the dictionary {entry.name} was trained with "
                               "(sha256 differs): binarize the data with the recipe's prepare.sh")
            data_dir, source = data, f"{data} (test split)"
        else:
            data_dir = binarize_eval_text(entry, folder, tmp)
            source = f"{entry.eval_text} (text shipped with the model, not the paper's test set)"
        r = evaluate_checkpoint(ckpt, data_dir, metric.name, metric.eval_args)
    return {"name": metric.name, "value": r.value, "data": source}
