"""Each normalization against its formula (docs/design.md section 2)."""
import pytest
import torch

from nq_plugin.norm import NORMALIZATIONS, build_normalization
from nq_plugin.norm.batch import ema_update

F_ = 8  # 4 gates x H = 2


def test_registry():
    assert set(NORMALIZATIONS) == {"none", "weight", "layer", "batch", "power"}


def test_unknown_norm_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown normalization 'group'.*batch.*weight"):
        build_normalization("group", F_)


def test_bad_bn_stats():
    with pytest.raises(ValueError, match="shared or separate"):
        build_normalization("batch", F_, bn_stats="per-step")


def test_weight_norm_formula_and_init():
    torch.manual_seed(0)
    w = torch.randn(F_, 5)
    norm = build_normalization("weight", F_)
    norm.init_from_weight(w)
    torch.testing.assert_close(norm.gain.detach(), w.norm(dim=1))
    q = torch.sign(w)
    with torch.no_grad():
        norm.gain.copy_(torch.arange(1.0, F_ + 1))
    out = norm.weight(q)
    expected = torch.arange(1.0, F_ + 1).unsqueeze(1) * q / q.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, expected)
    assert norm.counted_parameters() == F_


def test_weight_norm_gradients_are_autograds_of_the_formula():
    """The weight norm's own backward equals autograd through g W / max(||W||, eps), a row of
    zeros (the clamped norm) included, and passes gradcheck."""
    torch.manual_seed(0)
    norm = build_normalization("weight", F_).double()
    with torch.no_grad():
        norm.gain.copy_(torch.rand(F_, dtype=torch.double) + 0.5)
    w = torch.randn(F_, 5, dtype=torch.double)
    w[3] = 0
    w.requires_grad_(True)
    grad = torch.randn(F_, 5, dtype=torch.double)
    got = torch.autograd.grad(norm.weight(w), (w, norm.gain), grad)
    reference = w * (norm.gain.unsqueeze(1) / w.norm(dim=1, keepdim=True).clamp_min(norm.eps))
    expected = torch.autograd.grad(reference, (w, norm.gain), grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    v = torch.randn(F_, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, g: norm.weight(v), (v, norm.gain))


def test_layer_norm_per_gate_block():
    torch.manual_seed(0)
    norm = build_normalization("layer", F_, layer_norm_gain=0.5)
    with torch.no_grad():
        norm.shift.copy_(torch.arange(F_, dtype=torch.float))
    y = torch.randn(3, F_)
    out = norm.step(y, 0)
    blocks = y.reshape(3, 4, 2)
    mean = blocks.mean(-1, keepdim=True)
    var = blocks.var(-1, unbiased=False, keepdim=True)
    expected = 0.5 * ((blocks - mean) / torch.sqrt(var + 1e-5)).reshape(3, F_) + norm.shift
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm.sequence(y.unsqueeze(0))[0], out)
    assert norm.counted_parameters() == 2 * F_


def test_batch_norm_training_formula_and_gamma_init():
    torch.manual_seed(0)
    norm = build_normalization("batch", F_)
    assert torch.all(norm.gain == 0.1) and torch.all(norm.shift == 0)
    y = torch.randn(6, F_)
    out = norm.step(y, 0)
    expected = 0.1 * (y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm.running_mean[0], 0.1 * y.mean(0))
    torch.testing.assert_close(norm.running_var[0], 0.9 + 0.1 * y.var(0, unbiased=True))


def test_batch_norm_separate_uses_last_step_stats_beyond_tmax():
    torch.manual_seed(0)
    norm = build_normalization("batch", F_, bn_stats="separate", bn_max_steps=3)
    assert norm.running_mean.shape == (3, F_)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(3, F_))
        norm.running_var.copy_(torch.rand(3, F_) + 0.5)
    norm.eval()
    y = torch.randn(7, 4, F_)  # 7 steps > T_max = 3
    out = norm.sequence(y, 0)
    for t in range(7):
        s = min(t, 2)
        expected = 0.1 * (y[t] - norm.running_mean[s]) / torch.sqrt(norm.running_var[s] + 1e-5)
        torch.testing.assert_close(out[t], expected)
        torch.testing.assert_close(norm.step(y[t], t), expected)
    # a window starting at t0 = 5 uses slot 2 throughout
    torch.testing.assert_close(norm.sequence(y[5:7], 5)[1], out[6])


def test_batch_norm_shared_vs_separate_statistics():
    torch.manual_seed(0)
    shared = build_normalization("batch", F_, bn_stats="shared")
    separate = build_normalization("batch", F_, bn_stats="separate", bn_max_steps=4)
    y = torch.randn(4, 5, F_) + torch.arange(4.0).reshape(4, 1, 1) * 3  # step-dependent means
    shared.sequence(y)
    separate.sequence(y)
    assert shared.running_mean.shape == (1, F_)
    # separate: slot t saw only step t
    torch.testing.assert_close(separate.running_mean, 0.1 * y.mean(1))
    # shared: 4 sequential momentum updates, the later steps weigh more
    expected = torch.zeros(F_)
    for t in range(4):
        expected = 0.9 * expected + 0.1 * y[t].mean(0)
    torch.testing.assert_close(shared.running_mean[0], expected)
    shared.eval()
    separate.eval()
    assert not torch.allclose(shared.sequence(y), separate.sequence(y))


def test_batch_norm_sequence_equals_steps_in_training():
    torch.manual_seed(0)
    a = build_normalization("batch", F_, bn_stats="separate", bn_max_steps=2)
    b = build_normalization("batch", F_, bn_stats="separate", bn_max_steps=2)
    y = torch.randn(5, 4, F_)
    out_seq = a.sequence(y, 0)
    out_steps = torch.stack([b.step(y[t], t) for t in range(5)])
    torch.testing.assert_close(out_seq, out_steps)
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)


def test_ema_update_closed_form():
    buf = torch.zeros(2, 3)
    vals = torch.arange(9.0).reshape(3, 3)
    ema_update(buf, vals, torch.tensor([0, 1, 1]), 0.5)
    torch.testing.assert_close(buf[0], 0.5 * vals[0])
    torch.testing.assert_close(buf[1], 0.5 * (0.5 * vals[1]) + 0.5 * vals[2])


def test_power_norm_forward_backward_and_statistics():
    torch.manual_seed(0)
    norm = build_normalization("power", F_, pn_alpha=0.8, pn_alpha_backward=0.7, bn_gain=1.0)
    y = torch.randn(5, F_, requires_grad=True)
    norm.begin_forward()
    out = norm.step(y, 0)
    psi = torch.sqrt(torch.ones(F_) + 1e-5)  # running psi^2 starts at 1
    torch.testing.assert_close(out, y / psi)
    g = torch.randn(5, F_)
    out.backward(g)
    torch.testing.assert_close(y.grad, g / psi)  # nu = 0 initially
    # next iteration folds the statistics (eq. 13)
    norm.begin_forward()
    y_hat = (y / psi).detach()
    phi = 0.8 * 1 + 0.2 * y.detach().pow(2).mean(0)
    torch.testing.assert_close(norm.running_phi, phi)
    gamma = y_hat.pow(2).mean(0)
    lam = (g * y_hat).mean(0)
    nu = 0.3 * lam  # nu (1 - 0.3 Gamma) + 0.3 Lambda with nu = 0
    torch.testing.assert_close(norm.nu, nu)
    # approximate backward with nu != 0 (eqs. 11-12)
    y2 = torch.randn(5, F_, requires_grad=True)
    out2 = norm.step(y2, 0)
    psi2 = torch.sqrt(phi + 1e-5)
    torch.testing.assert_close(out2, y2 / psi2)
    out2.backward(g)
    torch.testing.assert_close(y2.grad, (g - nu * y2.detach() / psi2) / psi2)
    del gamma
    norm.eval()
    norm.begin_forward()
    torch.testing.assert_close(norm.step(y2, 0), y2 / torch.sqrt(norm.running_phi + 1e-5))


def test_power_norm_warmup_uses_batch_quadratic_mean():
    torch.manual_seed(0)
    norm = build_normalization("power", F_, pn_warmup=1, bn_gain=1.0)
    y = torch.randn(5, F_)
    norm.begin_forward()
    torch.testing.assert_close(norm.step(y, 0), y / torch.sqrt(y.pow(2).mean(0) + 1e-5))
    norm.begin_forward()  # iteration 2: running statistics
    torch.testing.assert_close(norm.step(y, 0), y / torch.sqrt(norm.running_phi + 1e-5))


def _double(norm):
    return norm.double()


@pytest.mark.parametrize("name,opts", [
    ("layer", {}), ("batch", {"bn_stats": "shared"}),
    ("batch", {"bn_stats": "separate", "bn_max_steps": 2}),
    ("power", {"pn_warmup": 5}), ("power", {}),
])
def test_gradcheck_norm(name, opts):
    torch.manual_seed(0)
    norm = _double(build_normalization(name, F_, **opts))
    norm.begin_forward()
    y = torch.randn(3, 4, F_, dtype=torch.double, requires_grad=True)
    params = [p for p in norm.parameters()]
    assert torch.autograd.gradcheck(lambda y, *p: norm.sequence(y, 0), (y, *params))
    assert torch.autograd.gradcheck(lambda y, *p: norm.step(y[0], 1), (y, *params))


@pytest.mark.parametrize("stats", ["shared", "separate"])
def test_batch_norm_refuses_batch_statistics_of_one_sample(stats):
    """Regression: (T, 1, F) in training used to leave a NaN running variance silently."""
    from nq_plugin.nn import NQLSTM
    lstm = NQLSTM(3, 4, norm="batch", bn_stats=stats, bn_max_steps=5)
    with pytest.raises(ValueError, match="at least 2 sequences"):
        lstm(torch.randn(5, 1, 3))
    assert all(torch.isfinite(b).all() for b in lstm.buffers())
    lstm(torch.randn(5, 2, 3))  # two columns train
    lstm.eval()
    out, _ = lstm(torch.randn(5, 1, 3))  # inference at batch 1 uses the running statistics
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("stats", ["shared", "separate"])
@pytest.mark.parametrize("recurrence", ["python", "auto"])
def test_batch_norm_batch_of_one_after_full_batches_uses_running_statistics(stats, recurrence,
        monkeypatch, caplog, backend_choice):
    """The last, short batch of an epoch (one sequence) does not stop a long run: it is
    normalized with the running statistics (as in eval mode), which it leaves unchanged, and
    the log says so once; the model still trains (gradients reach the weights)."""
    import logging
    from nq_plugin.nn import NQLSTM
    from nq_plugin.norm import batch
    backend_choice(recurrence=recurrence)
    monkeypatch.setattr(batch._log_once, "seen", set())
    torch.manual_seed(0)
    lstm = NQLSTM(3, 4, norm="batch", bn_stats=stats, bn_max_steps=5)
    lstm(torch.randn(5, 3, 3))  # a full batch first
    running = {k: v.clone() for k, v in lstm.named_buffers()}
    x = torch.randn(5, 1, 3)
    with caplog.at_level(logging.WARNING, logger="nq_plugin.norm.batch"):
        out, _ = lstm(x)
        lstm(x)
    assert torch.isfinite(out).all()
    said = [r for r in caplog.records if "holds one sequence" in r.getMessage()]
    assert len(said) == 1  # once per process
    for k, v in lstm.named_buffers():
        assert torch.equal(v, running[k]), k  # the batch of one left the statistics alone
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in lstm.parameters() if p.requires_grad)
    lstm.eval()  # the same numbers as inference with those statistics
    expected, _ = lstm(x)
    assert torch.allclose(out, expected, atol=1e-6)
