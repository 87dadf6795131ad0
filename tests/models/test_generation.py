"""Incremental decoding for every quantizer x normalization, unpacked and packed (nq-pack):
fairseq's hub interface (``sample`` with beam search and with sampling, ``score``) in-process
for every configuration, and the real ``fairseq-generate`` / ``fairseq-interactive`` commands on
the stock ``language_modeling`` task. Packed and unpacked models give the same tokens under the
same seed; generation runs past the per-step batch-norm statistics (T_max = 4)."""
import copy
import math

import pytest
import torch

from tests.fairseq_utils import TINY, USER_DIR, console, train

QUANTIZERS = ["fp", "bc", "tc", "bwn", "twn", "lab", "lat"]
NORMS = [("none", "shared"), ("weight", "shared"), ("layer", "shared"), ("batch", "shared"),
         ("batch", "separate"), ("power", "shared")]
T_MAX = 4  # per-step statistics; every generation below runs longer


@pytest.fixture(scope="module")
def lm_setup(demo_char_data, tmp_path_factory):
    """A training run's configuration and the stock language_modeling task on the demo data."""
    from fairseq import checkpoint_utils
    from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask
    ckpt = train(demo_char_data, tmp_path_factory.mktemp("gen-cfg"), *TINY, updates=1)
    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))["cfg"]
    task = LanguageModelingTask.setup_task(
        LanguageModelingConfig(data=str(demo_char_data), sample_break_mode="eos"))
    return cfg, task


def _trained_pair(cfg, task, quantizer, norm, stats):
    """A briefly trained model of the configuration (real statistics and loss-aware scales)
    and its packed copy."""
    from omegaconf import open_dict
    from nq_plugin.models.nq_lstm_lm import NQLSTMLanguageModel
    from nq_plugin.models.nq_lstm_lm_packed import (NQLSTMPackedLanguageModel,
                                                    PackedNQLSTMDecoder)
    from nq_plugin.quant import attach_optimizer
    model_cfg = copy.deepcopy(cfg.model)
    with open_dict(model_cfg):
        model_cfg.quantizer, model_cfg.norm, model_cfg.bn_stats = quantizer, norm, stats
        model_cfg.bn_max_steps = T_MAX
    torch.manual_seed(0)
    model = NQLSTMLanguageModel.build_model(model_cfg, task)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    attach_optimizer(model, opt)
    for _ in range(2):
        logits, _ = model(torch.randint(4, len(task.dictionary), (3, 6)))
        logits.logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    decoder, _ = PackedNQLSTMDecoder.from_decoder(model.decoder, model_cfg, task.dictionary)
    return model, NQLSTMPackedLanguageModel(decoder)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_hub_sample_and_score_packed_equals_unpacked(lm_setup, quantizer):
    from fairseq.hub_utils import GeneratorHubInterface
    cfg, task = lm_setup
    for norm, stats in NORMS:
        model, packed = _trained_pair(cfg, task, quantizer, norm, stats)
        results = []
        for m in (model, packed):
            hub = GeneratorHubInterface(cfg, task, [m])
            # prompts of one length: fairseq's LM generation pads shorter prefixes in a batch
            prompts = [hub.encode(p) for p in ("t h e", "a _ d")]
            beam = [h[0]["tokens"].tolist() for h in
                    hub.generate(prompts, beam=3, max_len_b=12, min_len=10)]
            torch.manual_seed(5)
            sampled = hub.sample(["t h e", "o f _"], beam=1, sampling=True, sampling_topk=5,
                                 max_len_b=12, min_len=10)
            scored = hub.score(["t h e _ c a t _ s a t"])[0]["positional_scores"]
            results.append((beam, sampled, scored))
        (beam, sampled, scored), (p_beam, p_sampled, p_scored) = results
        where = f"{quantizer}+{norm}/{stats}"
        assert all(len(tokens) >= 10 for tokens in beam), (where, beam)  # beyond T_max
        assert all(text.startswith(("t h e ", "o f _ ")) for text in sampled), (where, sampled)
        assert p_beam == beam and p_sampled == sampled, (where, beam, p_beam, sampled, p_sampled)
        assert torch.isfinite(scored).all(), where
        torch.testing.assert_close(p_scored, scored, atol=1e-4, rtol=0, msg=where)


@pytest.fixture(scope="module")
def prompt_data(demo_char_data, tmp_path_factory):
    """The demo dictionary with a 'test' split of three short prompts (fairseq-generate on the
    language_modeling task forces each line as a prefix and continues it)."""
    from fairseq import options
    from fairseq_cli import preprocess
    root = tmp_path_factory.mktemp("prompts")
    (root / "prompts.txt").write_text("t h e\na _ d\ni t _\n")  # one length per batch
    dest = root / "bin"
    argv = ["--only-source", "--srcdict", str(demo_char_data / "dict.txt"), "--testpref",
            str(root / "prompts.txt"), "--destdir", str(dest), "--workers", "1"]
    preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return dest


def _hypotheses(stdout):
    return sorted(line for line in stdout.splitlines() if line.startswith("H-"))


@pytest.mark.slow
def test_generate_and_interactive_commands_packed_equals_unpacked(demo_char_data, prompt_data,
                                                                  tmp_path):
    """The real commands on the hardest case: TerConnect (2-bit) with per-step batch-norm
    statistics, generating past T_max (every configuration goes through the same generator in
    test_hub_sample_and_score_packed_equals_unpacked)."""
    quantizer, norm, stats = "tc", "batch", "separate"
    from nq_plugin.packed.export import pack_checkpoint
    ckpt = train(demo_char_data, tmp_path / "ckpt", *TINY[:-2], "--bn-max-steps", str(T_MAX),
                 "--quantizer", quantizer, "--norm", norm, "--bn-stats", stats, updates=3)
    pack_checkpoint(str(ckpt), str(tmp_path / "packed"),
                    dictionary=str(demo_char_data / "dict.txt"))
    common = ["--user-dir", USER_DIR, "--task", "language_modeling", "--sample-break-mode", "eos",
              "--cpu", "--max-len-b", "20",
              # fairseq drops a last batch smaller than this multiple (8 by default):
              # facebookresearch/fairseq#5036
              "--required-batch-size-multiple", "1",
              "--min-len", "12"]
    outputs = {}
    for kind, path in (("unpacked", ckpt), ("packed", tmp_path / "packed" / "checkpoint.pt")):
        beam = console("fairseq-generate", prompt_data, *common, "--path", path, "--beam", "3",
                       "--gen-subset", "test", "--batch-size", "2", "--num-workers", "0")
        sampled = console("fairseq-generate", prompt_data, *common, "--path", path, "--beam", "1",
                          "--sampling", "--sampling-topk", "5", "--seed", "3", "--gen-subset",
                          "test", "--batch-size", "3", "--num-workers", "0")
        interactive = console("fairseq-interactive", prompt_data, *common, "--path", path,
                              "--beam", "2", input="t h e\no f _\n")
        outputs[kind] = [_hypotheses(r.stdout) for r in (beam, sampled, interactive)]
    beam, sampled, interactive = outputs["unpacked"]
    assert len(beam) == len(sampled) == 3 and len(interactive) == 2
    for line in beam + sampled + interactive:
        _, score, text = line.split("\t")
        assert math.isfinite(float(score)) and len(text.split()) >= 12, line
    assert beam[0].split("\t")[2].startswith("t h e")
    # the same hypotheses, token for token; the scores agree to float32 rounding (packed and
    # unpacked run different kernels: on an AVX-512 CPU a score differed in its 7th digit)
    for packed, unpacked in zip(outputs["packed"], outputs["unpacked"]):
        assert len(packed) == len(unpacked)
        for p, u in zip(packed, unpacked):
            (pid, pscore, ptext), (uid, uscore, utext) = p.split("\t"), u.split("\t")
            assert (pid, ptext) == (uid, utext)
            assert float(pscore) == pytest.approx(float(uscore), rel=1e-5, abs=1e-6)
