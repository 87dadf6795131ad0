"""The bptt_lm task: contiguous columns, carried state in training and fairseq-eval-lm, resume."""
import math
import pathlib

import pytest
import torch

from tests.fairseq_utils import SHARED_DATA, TINY, eval_lm, preprocess, train


def test_segments_are_contiguous_columns_without_lost_targets():
    from nq_plugin.tasks.bptt_lm import BPTTSegments, TokenStream
    stream = TokenStream("train", torch.arange(100))
    seg = BPTTSegments(stream, columns=3, steps=7)
    # 3 columns of 33 tokens: 32 targets each, segments of 7 -> 5 segments (last has 4 steps)
    assert len(seg) == 5
    sources, targets = [], []
    for k in range(len(seg)):
        batch = seg.collater([seg[k]])
        assert batch["net_input"]["first_segment"] == (k == 0)
        assert batch["net_input"]["stream"] == "train"
        sources.append(batch["net_input"]["src_tokens"])
        targets.append(batch["target"])
    src, tgt = torch.cat(sources, 1), torch.cat(targets, 1)
    assert torch.equal(src[1], torch.arange(33, 65))  # column 1 is contiguous
    assert torch.equal(tgt, src + 1)  # every next token is a target, none lost at boundaries
    # two data-parallel shards take disjoint columns of a 2 x 3 grid, same number of segments
    s0, s1 = BPTTSegments(stream, 3, 7, 0, 2), BPTTSegments(stream, 3, 7, 1, 2)
    assert len(s0) == len(s1)
    assert torch.equal(s0.columns[0], torch.arange(0, 16)) and torch.equal(s1.columns[0], torch.arange(48, 64))


def test_too_small_split_errors():
    from nq_plugin.tasks.bptt_lm import BPTTSegments, TokenStream
    with pytest.raises(ValueError, match="lower --batch-size"):
        BPTTSegments(TokenStream("valid", torch.arange(5)), columns=4, steps=3)


def test_missing_data_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dict.txt"):
        train(tmp_path / "nothing", tmp_path / "ck", *TINY)


@pytest.mark.parametrize("norm", ["none", "weight", "layer"])
def test_eval_lm_in_segments_equals_one_pass(demo_char_data, tmp_path, norm):
    ckpt = train(demo_char_data, tmp_path, *TINY, "--quantizer", "bc", "--norm", norm)
    segmented = eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "7")
    one_pass = eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "100000")
    assert segmented["loss"] == pytest.approx(one_pass["loss"], abs=1e-5)


def test_resume_mid_epoch_is_exact(demo_char_data, tmp_path):
    common = [*TINY, "--quantizer", "bc", "--norm", "power", "--dropout", "0.2",
              "--pn-warmup", "2", "--validate-interval-updates", "1000"]
    straight = train(demo_char_data, tmp_path / "a", *common, updates=8)
    train(demo_char_data, tmp_path / "b", *common, updates=4)
    resumed = train(demo_char_data, tmp_path / "b", *common, updates=8)
    a = torch.load(straight, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 8
    for key, value in a["model"].items():
        if torch.is_tensor(value):
            torch.testing.assert_close(b["model"][key], value, atol=1e-6, rtol=0, msg=key)
    carried_a = a["model"]["decoder._extra_state"]["carried"]["train"]
    carried_b = b["model"]["decoder._extra_state"]["carried"]["train"]
    torch.testing.assert_close(carried_b["h"], carried_a["h"], atol=1e-6, rtol=0)
    assert a["extra_state"]["val_loss"] == pytest.approx(b["extra_state"]["val_loss"], abs=1e-6)


def test_language_modeling_task_works_too(demo_char_data, tmp_path):
    ckpt = train(demo_char_data, tmp_path, "--hidden-size", "24", "--batch-size", "4",
                 "--tokens-per-sample", "16", "--quantizer", "tc", "--norm", "layer",
                 task="language_modeling")
    results = eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "16",
                      task="language_modeling")
    assert math.isfinite(results["loss"])


PTB = SHARED_DATA / "ptb"


@pytest.mark.skipif(not (PTB / "ptb.char.train.txt").exists(),
                    reason="real PTB data not found at ../shared/data/ptb")
def test_real_ptb_char_short_run_beats_unigram(tmp_path):
    lines = (PTB / "ptb.char.train.txt").read_text().splitlines()[:3000]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    valid = (PTB / "ptb.char.valid.txt").read_text().splitlines()[:300]
    (tmp_path / "valid.txt").write_text("\n".join(valid) + "\n")
    data = preprocess(tmp_path / "train.txt", tmp_path / "valid.txt", tmp_path / "bin")
    # unigram entropy of the training symbols (incl. line ends), in bits
    counts = {}
    for line in lines:
        for s in line.split() + ["</s>"]:
            counts[s] = counts.get(s, 0) + 1
    total = sum(counts.values())
    unigram = -sum(c / total * math.log2(c / total) for c in counts.values())
    ckpt = train(data, tmp_path / "ck", "--hidden-size", "128", "--batch-size", "16",
                 "--tokens-per-sample", "50", "--quantizer", "bc", "--norm", "weight",
                 "--lr", "0.005", "--clip-norm", "5", updates=150)
    bpc = eval_lm(data, ckpt, "--tokens-per-sample", "100")["loss"]
    assert bpc < unigram - 0.8, (bpc, unigram)


def test_max_tokens_sets_the_columns_or_is_refused(demo_char_data, tmp_path):
    """Regression: --max-tokens without --batch-size used to be ignored (one column)."""
    from tests.fairseq_utils import train
    from nq_plugin.checkpoint import load_checkpoint
    args = ["--hidden-size", "16", "--tokens-per-sample", "16", "--max-tokens", "64",
            "--norm", "batch", "--quantizer", "bc"]
    ckpt = train(demo_char_data, tmp_path / "ok", *args, updates=2)
    carried = load_checkpoint(str(ckpt))["model"]["decoder._extra_state"]["carried"]
    assert carried["train"]["h"].shape[1] == 4  # 64 tokens / 16 per segment = 4 columns
    with pytest.raises(ValueError, match="less than one segment"):
        train(demo_char_data, tmp_path / "bad", "--hidden-size", "16", "--tokens-per-sample",
              "16", "--max-tokens", "8", updates=1)


def test_eval_with_another_window_than_per_step_statistics_warns(demo_char_data, tmp_path,
                                                                   caplog):
    """Regression: fairseq-eval-lm's --tokens-per-sample (default 100) silently shifted which
    step's batch-norm statistics a per-step model used."""
    import logging
    ckpt = train(demo_char_data, tmp_path, *TINY, "--norm", "batch", "--bn-stats", "separate",
                 updates=2)
    with caplog.at_level(logging.WARNING, logger="nq_plugin.tasks.bptt_lm"):
        eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "16")
    assert "--tokens-per-sample" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="nq_plugin.tasks.bptt_lm"):
        eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "20")
    assert "pass --tokens-per-sample 16" in caplog.text


def test_a_loss_that_only_grows_gets_the_quantized_lstm_hint(demo_char_data, tmp_path, caplog):
    """Regression: --lr 1e30 trained on with a loss of 1e31 and finite gradients, no word."""
    import logging
    with caplog.at_level(logging.WARNING, logger="nq_plugin.tasks.bptt_lm"):
        train(demo_char_data, tmp_path / "ok", *TINY, "--quantizer", "bc", updates=12)
    assert "diverging" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="nq_plugin.tasks.bptt_lm"):
        train(demo_char_data, tmp_path / "bad", *TINY, "--quantizer", "bc", "--lr", "1e30",
              updates=12)
    assert "training is diverging" in caplog.text and "--norm weight" in caplog.text


def test_batch_norm_survives_a_last_batch_of_one_under_language_modeling(tmp_path, caplog,
                                                                         monkeypatch):
    """fairseq's stock language_modeling task, one sentence per sample and --batch-size 2 over
    an odd number of lines: an epoch ends with a batch of one sequence. Batch norm trains
    through it (running statistics for that batch, said once) instead of stopping the run."""
    import logging
    from nq_plugin.norm import batch
    from tests.fairseq_utils import DEMO_TEXT, preprocess
    monkeypatch.setattr(batch._log_once, "seen", set())  # said once per process
    lines = (DEMO_TEXT / "train.txt").read_text().splitlines()[:7]
    text = tmp_path / "seven.txt"
    text.write_text("\n".join(lines) + "\n")
    data = preprocess(text, text, tmp_path / "bin")
    with caplog.at_level(logging.WARNING, logger="nq_plugin.norm.batch"):
        ckpt = train(data, tmp_path / "run", "--hidden-size", "16", "--quantizer", "bc",
                     "--norm", "batch", "--batch-size", "2", "--required-batch-size-multiple",
                     "1", "--sample-break-mode", "eos", "--tokens-per-sample", "512",
                     "--bn-max-steps", "16", task="language_modeling", updates=8)
    state = torch.load(ckpt, weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 8  # two epochs of 4 batches
    assert all(torch.isfinite(v).all() for v in state["model"].values() if torch.is_tensor(v))
    assert any("holds one sequence" in r.getMessage() for r in caplog.records)
