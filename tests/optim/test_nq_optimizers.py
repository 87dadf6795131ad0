"""nq_sgd / nq_adam: the paper's learning-rate scale for latent LSTM weights, second moments."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from nq_plugin.nn import NQLSTM
from nq_plugin.optim.nq_optimizers import NQAdam, NQAdamConfig, NQSGD, NQSGDConfig
from nq_plugin.optim.param_groups import parse_lr_scale
from tests.fairseq_utils import TINY, train


def _model(quantizer="bc", hidden=16):
    torch.manual_seed(0)
    lstm = NQLSTM(5, hidden, 1, quantizer=quantizer, norm="weight")
    head = torch.nn.Linear(hidden, 3)
    return lstm, head


def _step(optimizer, lstm, head):
    out, _ = lstm(torch.randn(4, 2, 5))
    head(out).pow(2).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def _deltas(scale, quantizer="bc", hidden=16, lr=0.1):
    lstm, head = _model(quantizer, hidden)
    params = list(lstm.parameters()) + list(head.parameters())
    before = [p.detach().clone() for p in params]
    cfg = OmegaConf.structured(NQSGDConfig(lstm_lr_scale=scale, lr=[lr]))
    opt = NQSGD(cfg, params)
    opt.set_lr(lr)  # what fairseq's LR schedulers call
    torch.manual_seed(1)
    _step(opt, lstm, head)
    return {name: (p.detach() - b) for (name, p), b in
            zip(list(lstm.named_parameters()) + [("head." + n, p) for n, p in head.named_parameters()],
                before)}, opt


def test_auto_scale_moves_latent_weights_2_sqrt_h_further():
    hidden = 16
    plain, _ = _deltas("none", hidden=hidden)
    scaled, opt = _deltas("auto", hidden=hidden)
    factor = 2 * math.sqrt(hidden)
    for name in plain:
        expected = factor if name.endswith(("weight_ih", "weight_hh")) else 1.0
        torch.testing.assert_close(scaled[name], plain[name] * expected, rtol=1e-5, atol=1e-7,
                                   msg=name)
    assert opt.get_lr() == pytest.approx(0.1)  # the base rate, not the scaled one


def test_scale_survives_lr_scheduler():
    from fairseq.optim.lr_scheduler.inverse_square_root_schedule import (
        InverseSquareRootLRScheduleConfig, InverseSquareRootSchedule)
    _, opt = _deltas("auto")
    sched_cfg = OmegaConf.structured(InverseSquareRootLRScheduleConfig(
        warmup_updates=10, warmup_init_lr=0.01, lr=[0.1]))
    sched = InverseSquareRootSchedule(sched_cfg, opt)
    sched.step_update(5)
    base = opt.get_lr()
    rates = sorted(g["lr"] for g in opt.param_groups)
    assert rates[0] == pytest.approx(base)
    assert rates[-1] == pytest.approx(base * 2 * math.sqrt(16))


def test_auto_leaves_non_scale_free_quantizers_alone():
    plain, _ = _deltas("none", quantizer="bwn")
    scaled, _ = _deltas("auto", quantizer="bwn")
    for name in plain:
        torch.testing.assert_close(scaled[name], plain[name])


def test_numeric_scale_and_bad_values():
    assert parse_lr_scale("3") == 3.0 and parse_lr_scale("auto") == "auto"
    assert parse_lr_scale("none") is None
    with pytest.raises(ValueError, match="none, auto or a positive number"):
        parse_lr_scale("fast")
    with pytest.raises(ValueError, match="positive"):
        parse_lr_scale("-2")


def test_nq_adam_feeds_second_moment_to_lab():
    lstm, head = _model("lab")
    cfg = OmegaConf.structured(NQAdamConfig(lr=[0.01], tpu=False))
    opt = NQAdam(cfg, list(lstm.parameters()) + list(head.parameters()))
    _step(opt, lstm, head)
    _step(opt, lstm, head)
    layer = lstm.layers[0]
    v = opt.optimizer.state[layer.weight_hh]["exp_avg_sq"]
    assert v.abs().sum() > 0
    # the last forward used D = sqrt(v) + 1e-8 of the state before that step: recompute it
    # from the current state by another forward and compare the stored scale
    out, _ = lstm(torch.randn(4, 2, 5))
    d = (v.sqrt() + 1e-8).reshape(4, -1)
    w = layer.weight_hh.detach().reshape(4, -1)
    torch.testing.assert_close(layer.hh_quantizer.scale, (d * w).abs().sum(1) / d.sum(1))


def test_lab_with_sgd_fails_clearly(demo_char_data, tmp_path):
    with pytest.raises(RuntimeError, match="--optimizer nq_adam"):
        train(demo_char_data, tmp_path, *TINY, "--quantizer", "lab", "--optimizer", "nq_sgd")


def test_fairseq_train_with_lr_scale_runs(demo_char_data, tmp_path):
    ckpt = train(demo_char_data, tmp_path, *TINY, "--quantizer", "bc", "--optimizer", "nq_sgd",
                 "--lr", "1", "--lstm-lr-scale", "auto", "--clip-norm", "0.25",
                 "--lr-scheduler", "fixed")
    state = torch.load(ckpt, weights_only=True)
    groups = state["last_optimizer_state"]["param_groups"]
    assert sorted(round(g["lr_scale"], 4) for g in groups) == [1.0, round(2 * math.sqrt(24), 4)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_untagged_parameter_copies_are_refused_not_silently_unscaled(optimizer):
    """Regression: fairseq's --fp16/--bf16 (FP16Optimizer) hand the optimizer fp32 copies of the
    parameters without nq_plugin's tags; the latent weights' learning-rate scale collapsed into
    the base group without a word. Now the optimizer refuses, naming the flags."""
    lstm = NQLSTM(5, 8, quantizer="bc", norm="weight")
    copies = [torch.nn.Parameter(p.detach().clone().float()) for p in lstm.parameters()]
    if optimizer == "adam":
        cfg = OmegaConf.structured(NQAdamConfig(lr=[0.01], tpu=False, lstm_lr_scale="auto"))
        build = lambda params: NQAdam(cfg, params)  # noqa: E731
    else:
        cfg = OmegaConf.structured(NQSGDConfig(lstm_lr_scale="auto", lr=[1.0]))
        build = lambda params: NQSGD(cfg, params)  # noqa: E731
    with pytest.raises(ValueError, match="--fp16 / --bf16"):
        build(copies)
    assert len(build(list(lstm.parameters())).optimizer.param_groups) == 2  # tagged: scaled


def test_a_gradient_that_is_not_finite_gets_the_advice(caplog):
    """fairseq stops with "gradients are Nan/Inf"; the optimizer's clipping logs why that
    happens to quantized LSTMs first: without normalization, and with layer / batch norm over
    a term without variance (the initial-state noise of the sequence classifier)."""
    lstm = NQLSTM(3, 4, quantizer="bc", norm="layer")
    opt = NQAdam(OmegaConf.structured(NQAdamConfig(lr=[0.01], tpu=False)),
                 list(lstm.parameters()))
    lstm(torch.randn(2, 1, 3))[0].sum().backward()
    next(iter(lstm.parameters())).grad.fill_(float("nan"))
    with caplog.at_level("ERROR", logger="nq_plugin.optim.nq_optimizers"):
        norm = opt.clip_grad_norm(1.0)
    assert not bool(torch.isfinite(norm))
    assert "--norm weight, layer or batch" in caplog.text
    assert "--init-state-noise 0.1" in caplog.text
