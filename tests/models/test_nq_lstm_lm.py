"""nq_lstm_lm through fairseq's own train / eval-lm entry points (in-process, tiny sizes)."""
import math

import pytest
import torch

from tests.fairseq_utils import TINY, eval_lm, train

COMBOS = [(q, n, s) for q in ["fp", "bc", "tc", "bwn", "twn", "lab", "lat"]
          for n, s in [("none", "shared"), ("weight", "shared"), ("layer", "shared"),
                       ("batch", "shared"), ("batch", "separate"), ("power", "shared")]]


@pytest.mark.slow
@pytest.mark.parametrize("quantizer,norm,stats", COMBOS)
def test_train_and_eval_every_configuration(demo_char_data, tmp_path, quantizer, norm, stats):
    ckpt = train(demo_char_data, tmp_path, *TINY, "--quantizer", quantizer, "--norm", norm,
                 "--bn-stats", stats)
    results = eval_lm(demo_char_data, ckpt, "--tokens-per-sample", "16")
    assert math.isfinite(results["loss"]) and math.isfinite(results["perplexity"])
    assert 1 < results["perplexity"] < 100  # a 50-symbol vocabulary after 3 updates


def test_paper_architectures_build():
    from types import SimpleNamespace
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
    from fairseq.data import Dictionary
    from nq_plugin.models.nq_lstm_lm import NQLSTMDecoder
    from omegaconf import OmegaConf
    from nq_plugin.models.nq_lstm_lm import NQLSTMLMConfig
    expected = {"nq_lstm_lm_ptb_char": (512, 1, True), "nq_lstm_lm_warpeace": (512, 1, True),
                "nq_lstm_lm_text8": (2000, 1, True), "nq_lstm_lm_ptb_word": (300, 1, False),
                "nq_lstm_lm_ptb_word_650": (650, 1, False),
                "nq_lstm_lm_ptb_word_2x650": (650, 2, False)}
    for arch, (hidden, layers, one_hot) in expected.items():
        assert ARCH_MODEL_REGISTRY[arch].__name__ == "NQLSTMLanguageModel"
        args = SimpleNamespace(**{k: None for k in NQLSTMLMConfig.__dataclass_fields__})
        ARCH_CONFIG_REGISTRY[arch](args)
        assert (args.hidden_size, args.num_layers, args.one_hot_input) == (hidden, layers, one_hot)
    d = Dictionary()
    for c in "abc":
        d.add_symbol(c)
    cfg = OmegaConf.structured(NQLSTMLMConfig(hidden_size=8, embed_dim=8, one_hot_input=True))
    decoder = NQLSTMDecoder(cfg, d)
    assert decoder.lstm.input_size == len(d)  # one-hot input: W_x has vocab columns


def _decoder(**overrides):
    from fairseq.data import Dictionary
    from omegaconf import OmegaConf
    from nq_plugin.models.nq_lstm_lm import NQLSTMDecoder, NQLSTMLMConfig
    d = Dictionary()
    for c in "abcdefgh":
        d.add_symbol(c)
    options = {"hidden_size": 8, "embed_dim": 6, **overrides}
    cfg = OmegaConf.structured(NQLSTMLMConfig(**options))
    torch.manual_seed(0)
    return NQLSTMDecoder(cfg, d)


@pytest.mark.parametrize("norm", ["none", "weight", "layer"])
def test_carried_state_segments_equal_one_pass(norm):
    dec = _decoder(quantizer="bc", norm=norm).eval()
    tokens = torch.randint(4, 12, (3, 23))
    full, _ = dec(tokens)
    parts = [dec(seg, stream="s", first_segment=(i == 0))[0]
             for i, seg in enumerate(tokens.split(5, dim=1))]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_first_segment_resets_and_streams_are_separate():
    dec = _decoder(norm="layer").eval()
    tokens = torch.randint(4, 12, (2, 6))
    a, _ = dec(tokens, stream="train", first_segment=True)
    dec(tokens, stream="valid", first_segment=True)
    b, _ = dec(tokens, stream="train", first_segment=True)
    torch.testing.assert_close(a, b)
    c, _ = dec(tokens, stream="train")  # continues from the carried train state
    assert not torch.allclose(a, c)
    state = dec.state_dict()
    assert set(state["_extra_state"]["carried"]) == {"train", "valid"}


@pytest.mark.parametrize("norm,stats", [("none", "shared"), ("layer", "shared"),
                                        ("batch", "separate")])
def test_incremental_decoding_equals_full_forward(norm, stats):
    dec = _decoder(quantizer="tc", norm=norm, bn_stats=stats, bn_max_steps=4).eval()
    tokens = torch.randint(4, 12, (3, 7))  # longer than T_max = 4
    full, _ = dec(tokens)
    incremental_state = {}
    steps = [dec(tokens[:, :t + 1], incremental_state=incremental_state)[0]
             for t in range(tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    # reorder for beams: swap batch rows, the continuation follows the reordered state
    order = torch.tensor([2, 0, 1])
    dec.reorder_incremental_state(incremental_state, order)
    nxt = torch.randint(4, 12, (3, 1))
    step = dec(torch.cat([tokens[order], nxt], 1), incremental_state=incremental_state)[0]
    ref, _ = dec(torch.cat([tokens[order], nxt], 1))
    torch.testing.assert_close(step[:, 0], ref[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm,stats", [("weight", "shared"), ("batch", "separate")])
def test_generation_step_is_the_incremental_forward(norm, stats):
    """The sampling loop's step (no incremental-state dict, one symbol a call) gives exactly
    the logits of fairseq's incremental forward, per-step statistics past T_max included."""
    dec = _decoder(quantizer="tc", norm=norm, bn_stats=stats, bn_max_steps=4).eval()
    tokens = torch.randint(4, 12, (2, 8))
    incremental_state = {}
    ref = [dec(tokens[:, :3], incremental_state=incremental_state)[0]]
    ref += [dec(tokens[:, :t + 1], incremental_state=incremental_state)[0] for t in range(3, 8)]
    logits, state = dec.generation_step(tokens[:, :3])
    steps, t0 = [logits], 3
    for t in range(3, 8):
        logits, state = dec.generation_step(tokens[:, t:t + 1], state, t0)
        steps.append(logits)
        t0 += 1
    assert len(steps) == len(ref)
    for a, b in zip(steps, ref):
        assert torch.equal(a, b)


def test_share_embeddings_ties_weights_and_validates():
    dec = _decoder(embed_dim=8, share_embeddings=True)
    assert dec.output_projection.weight is dec.embed_tokens.weight
    with pytest.raises(ValueError, match="embed-dim == --hidden-size"):
        _decoder(embed_dim=6, share_embeddings=True)
    with pytest.raises(ValueError, match="one-hot"):
        _decoder(one_hot_input=True, share_embeddings=True)


def test_reference_init_of_embedding_and_softmax():
    """The authors' init_weights: U(-0.1, 0.1) embedding and softmax, zero softmax bias (the
    torch default embedding has std 1, which makes W_x x_t ~17x larger at d=300)."""
    dec = _decoder(embed_dim=300, hidden_size=8)
    emb, out = dec.embed_tokens.weight, dec.output_projection
    assert emb.abs().max() <= 0.1 and emb.std() > 0.05
    assert out.weight.abs().max() <= 0.1 and torch.all(out.bias == 0)
    norms = emb.norm(dim=1).mean()
    assert 0.8 < norms < 1.2  # mean ||x_t|| about 1 at d=300, as the reference
    default = _decoder(embed_dim=300, hidden_size=8, init_range=0.0)
    assert default.embed_tokens.weight.std() > 0.9  # torch's N(0, 1) kept on request
    with pytest.raises(ValueError, match="init-range"):
        _decoder(init_range=-1.0)


def test_stock_language_modeling_task_with_eos_breaks_through_the_real_command(
        demo_char_data, tmp_path):
    """Regression: with numpy >= 2, fairseq's language_modeling task with --sample-break-mode
    eos crashed on np.compat.long (fairseq's token_block_dataset); the plugin restores the
    alias. Trained and evaluated through the console commands."""
    from tests.fairseq_utils import USER_DIR, console
    save = tmp_path / "ckpt"
    console("fairseq-train", demo_char_data, "--user-dir", USER_DIR, "--task",
            "language_modeling", "--sample-break-mode", "eos", "--arch", "nq_lstm_lm_ptb_char",
            "--hidden-size", "16", "--quantizer", "bc", "--norm", "weight", "--optimizer",
            "nq_adam", "--lr", "0.01", "--batch-size", "4", "--max-update", "2", "--cpu",
            "--save-dir", save, "--no-epoch-checkpoints", "--num-workers", "0")
    res = console("fairseq-eval-lm", demo_char_data, "--user-dir", USER_DIR, "--task",
                  "language_modeling", "--sample-break-mode", "eos", "--path",
                  save / "checkpoint_last.pt", "--cpu", "--gen-subset", "valid",
                  "--num-workers", "0")
    out = res.stdout + res.stderr
    assert "Perplexity" in out and "np.compat" not in out


def test_fairseq_generate_with_beam_on_a_per_step_batch_norm_model(demo_char_data, tmp_path):
    """fairseq-generate (stock language_modeling task, beam 3) through the console command on a
    TerConnect + per-step batch-norm model trained with bptt_lm: hypotheses with finite scores
    (it crashed on numpy 2 before the plugin's compat alias)."""
    import math
    from tests.fairseq_utils import USER_DIR, console
    ckpt = train(demo_char_data, tmp_path, *TINY, "--quantizer", "tc", "--norm", "batch",
                 "--bn-stats", "separate", updates=5)
    res = console("fairseq-generate", demo_char_data, "--user-dir", USER_DIR, "--task",
                  "language_modeling", "--sample-break-mode", "eos", "--path", ckpt, "--beam",
                  "3", "--max-len-b", "12", "--cpu", "--gen-subset", "valid", "--batch-size",
                  "2", "--max-tokens", "4000", "--num-workers", "0")
    hyps = [l.split("\t") for l in res.stdout.splitlines() if l.startswith("H-")]
    assert hyps and all(math.isfinite(float(h[1])) and h[2].strip() for h in hyps)
