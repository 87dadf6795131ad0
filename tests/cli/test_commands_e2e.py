"""The real console commands, as a user runs them (subprocesses): preprocess, train, eval-lm,
nq-summary on the checkpoint."""
import json
import re

import pytest

from tests.fairseq_utils import DEMO_TEXT, console

ARGS = ["--hidden-size", "32", "--batch-size", "4", "--tokens-per-sample", "25",
        "--optimizer", "nq_adam", "--lr", "0.01", "--max-update", "5", "--cpu",
        "--no-epoch-checkpoints", "--log-format", "simple"]


def _preprocess(tmp_path):
    console("fairseq-preprocess", "--only-source", "--trainpref", DEMO_TEXT / "train.txt",
            "--validpref", DEMO_TEXT / "valid.txt", "--testpref", DEMO_TEXT / "valid.txt",
            "--destdir", tmp_path / "bin",
            "--workers", "1")
    return tmp_path / "bin"


def _ppl(output):
    match = re.search(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)", output)
    assert match, output[-2000:]
    return float(match.group(1)), float(match.group(2))


@pytest.mark.slow
def test_bptt_char_pipeline_and_summary(tmp_path):
    data = _preprocess(tmp_path)
    console("fairseq-train", data, "--user-dir", "nq_plugin", "--task", "bptt_lm", "--arch",
            "nq_lstm_lm_ptb_char", "--quantizer", "bc", "--norm", "weight", "--save-dir",
            tmp_path / "ck", *ARGS)
    res = console("fairseq-eval-lm", data, "--user-dir", "nq_plugin", "--task", "bptt_lm",
                  "--path", tmp_path / "ck" / "checkpoint_best.pt", "--cpu")
    bpc, ppl = _ppl(res.stdout + res.stderr)
    assert 0 < bpc < 6 and 1 < ppl < 64
    summary = json.loads(console("nq-summary", tmp_path / "ck" / "checkpoint_best.pt",
                                 "--json").stdout.strip().splitlines()[-1])
    # one-hot input: W_x is 4H x vocab, binary; weight norm adds 8H gains
    layer = summary["layers"][0]
    assert layer["quantizer"] == "bc" and layer["norm"] == "weight"
    assert layer["weights_hh"] == 4 * 32 * 32 and layer["bits_hh"] == 1
    assert summary["compression"] > 10


@pytest.mark.slow
def test_language_modeling_task_pipeline(tmp_path):
    data = _preprocess(tmp_path)
    console("fairseq-train", data, "--user-dir", "nq_plugin", "--task", "language_modeling",
            "--arch", "nq_lstm_lm_ptb_word", "--quantizer", "twn", "--norm", "batch",
            "--embed-dim", "32", "--save-dir", tmp_path / "ck", *ARGS)
    res = console("fairseq-eval-lm", data, "--user-dir", "nq_plugin", "--task",
                  "language_modeling", "--tokens-per-sample", "25", "--path",
                  tmp_path / "ck" / "checkpoint_last.pt", "--cpu")
    _ppl(res.stdout + res.stderr)
