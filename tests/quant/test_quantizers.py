"""Quantizers against the paper's definitions on hand-computed matrices (docs/design.md section 2)."""
import pytest
import torch

from nq_plugin.quant import QUANTIZERS, attach_optimizer, build_quantizer
from nq_plugin.quant.second_moment import OptimizerSecondMoment

# 4 gate blocks of 1 row x 4 columns each: one scale per block
W = torch.tensor([
    [0.5, -0.25, 0.0, 1.0],     # block i: mean|w| = 0.4375, Delta = 0.30625
    [-0.1, 0.1, 0.2, -0.2],     # block f: mean|w| = 0.15, Delta = 0.105
    [0.7, 0.7, -0.7, 0.0],      # block a: mean|w| = 0.525, Delta = 0.3675
    [-2.0, 0.0, 0.0, 0.0],      # block o: mean|w| = 0.5, Delta = 0.35
])


def q(name, w=W, **kw):
    quantizer = build_quantizer(name, **kw)
    return quantizer(w.clone()).detach()


def test_registry_has_all_paper_quantizers():
    assert set(QUANTIZERS) == {"fp", "bc", "tc", "bwn", "twn", "lab", "lat"}
    assert {n: QUANTIZERS[n].bits for n in QUANTIZERS} == {
        "fp": 32, "bc": 1, "bwn": 1, "lab": 1, "tc": 2, "twn": 2, "lat": 2}


def test_fp_is_identity():
    assert torch.equal(q("fp"), W)


def test_binaryconnect_sign_with_zero_to_plus_one():
    expected = torch.tensor([[1., -1., 1., 1.], [-1., 1., 1., -1.], [1., 1., -1., 1.],
                             [-1., 1., 1., 1.]])
    assert torch.equal(q("bc"), expected)


def test_bwn_scale_per_gate_block():
    alpha = torch.tensor([0.4375, 0.15, 0.525, 0.5]).unsqueeze(1)
    sign = q("bc")
    torch.testing.assert_close(q("bwn"), alpha * sign)


def test_terconnect_threshold_is_strict_0_7_mean():
    expected = torch.tensor([[1., 0., 0., 1.], [0., 0., 1., -1.], [1., 1., -1., 0.],
                             [-1., 0., 0., 0.]])
    assert torch.equal(q("tc"), expected)
    # an entry exactly at the threshold becomes 0: |w| = 0.7 * mean|w| with mean over 4 entries
    w = torch.tensor([[0.7, 1.0, 1.0, 1.1]] * 4)  # mean|w| = 0.95, Delta = 0.665 < 0.7: kept
    assert q("tc", w)[0, 0] == 1
    w = torch.tensor([[0.35, 0.5, 0.5, 0.15]] * 4)  # mean 0.375 -> Delta 0.2625; 0.15 -> 0
    assert torch.equal(q("tc", w)[0], torch.tensor([1., 1., 1., 0.]))
    tie = torch.tensor([[0.7, 0.0, 0.0, 3.3]] * 4)  # mean 1.0, Delta 0.7 == |0.7|: becomes 0
    assert q("tc", tie)[0, 0] == 0


def test_twn_scale_is_mean_over_surviving_entries():
    t = q("tc")
    alpha = torch.tensor([(0.5 + 1.0) / 2, (0.2 + 0.2) / 2, 0.7, 2.0]).unsqueeze(1)
    torch.testing.assert_close(q("twn"), alpha * t)
    zero = torch.zeros(4, 3)
    assert torch.equal(q("twn", zero), zero)  # no survivors: alpha = 0, no NaN


def test_lab_without_second_moment_equals_bwn():
    quantizer = build_quantizer("lab")
    torch.testing.assert_close(quantizer(W.clone()).detach(), q("bwn"))


def test_lab_with_second_moment_hand_computed():
    v = torch.tensor([[1.0, 4.0, 9.0, 16.0]] * 4)
    d = v.sqrt() + 1e-8
    quantizer = build_quantizer("lab")
    out = quantizer(W.clone(), v).detach()
    alpha0 = (0.5 * 1 + 0.25 * 2 + 0.0 * 3 + 1.0 * 4) / d[0].sum()  # = 5/10
    assert out[0, 0].item() == pytest.approx(alpha0.item())
    assert out[0, 1].item() == pytest.approx(-alpha0.item())
    # the scale is kept for evaluation without optimizer state
    assert quantizer.scale[0].item() == pytest.approx(0.5)
    quantizer.eval()
    torch.testing.assert_close(quantizer(W.clone()).detach(), out)


def test_lat_converges_to_fixed_point():
    torch.manual_seed(0)
    w = torch.randn(8, 50)
    v = torch.rand(8, 50)
    quantizer = build_quantizer("lat")
    out = quantizer(w.clone(), v).detach()
    d = (v.sqrt() + 1e-8).reshape(4, -1)
    blocks = w.reshape(4, -1)
    for k in range(4):
        alpha = quantizer.scale[k]
        b = (blocks[k] > alpha / 2).float() - (blocks[k] < -alpha / 2).float()
        # fixed point of the alternating solver: alpha = sum|b D w| / sum|b D|, b = I_{alpha/2}(w)
        alpha_again = (b * d[k] * blocks[k]).abs().sum() / (b * d[k]).abs().sum()
        assert alpha_again.item() == pytest.approx(alpha.item(), abs=1e-5)
        torch.testing.assert_close(out.reshape(4, -1)[k], alpha * b)
    assert set(out.reshape(4, -1)[0].div(quantizer.scale[0]).round().unique().tolist()) <= {-1, 0, 1}


def test_lat_hand_computed():
    # one block per quantizer (blocks=1): w = [3, 1, -0.2], D = 1
    w = torch.tensor([[3.0, 1.0, -0.2]])
    quantizer = build_quantizer("lat", blocks=1)
    out = quantizer(w.clone()).detach()
    # b0 = [1, 1, -1] -> alpha = 4.2/3 = 1.4 -> b = [1, 1, 0] (0.2 < 0.7) -> alpha = 2
    # -> b = [1, 0, 0] (1 is not > 1) -> alpha = 3 -> b = [1, 0, 0] -> alpha = 3 (converged)
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.0, 0.0]]))


@pytest.mark.parametrize("name", ["bc", "tc", "bwn", "twn", "lab", "lat"])
def test_straight_through_gradient_is_identity(name):
    w = torch.randn(8, 5, requires_grad=True)
    g = torch.randn(8, 5)
    build_quantizer(name)(w).backward(g)
    assert torch.equal(w.grad, g)


def test_latent_clip_clamps_and_cancels_gradient():
    w = torch.nn.Parameter(torch.tensor([[0.5, 2.0], [-3.0, 0.1], [1.0, -0.2], [0.0, 0.3]]))
    quantizer = build_quantizer("bc", latent_clip=1.0)
    out = quantizer(w)
    assert w.abs().max().item() == 1.0  # clipped in place
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # after clipping all |w| <= 1: kept
    w2 = torch.tensor([[0.5, 2.0], [-3.0, 0.1], [1.0, -0.2], [0.0, 0.3]], requires_grad=True)
    quantizer.eval()  # no clamp in eval: the gradient of |w| > 1 entries is cancelled
    quantizer(w2).sum().backward()
    assert torch.equal(w2.grad, (w2.detach().abs() <= 1).float())


def test_unknown_quantizer_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown quantizer 'ternary'.*bc.*lat"):
        build_quantizer("ternary")


def test_second_moment_source_reads_adam_state():
    p = torch.nn.Parameter(torch.randn(8, 3))
    opt = torch.optim.Adam([p])
    source = OptimizerSecondMoment(opt)
    assert source(p) is None
    p.grad = torch.ones_like(p)
    opt.step()
    torch.testing.assert_close(source(p), opt.state[p]["exp_avg_sq"])


def test_second_moment_refuses_sgd():
    p = torch.nn.Parameter(torch.randn(8, 3))
    with pytest.raises(ValueError, match="second moment"):
        OptimizerSecondMoment(torch.optim.SGD([p], lr=1.0))


def test_attach_optimizer_reaches_every_layer():
    from nq_plugin.nn import NQLSTM
    m = NQLSTM(3, 4, 2, quantizer="lab")
    opt = torch.optim.Adam(m.parameters())
    assert attach_optimizer(m, opt) == 2
    y, _ = m(torch.randn(2, 3, 3))
    y.sum().backward()
    opt.step()
    y, _ = m(torch.randn(2, 3, 3))  # now with D from exp_avg_sq
    layer = m.layers[0]
    v = opt.state[layer.weight_hh]["exp_avg_sq"]
    d = (v.sqrt() + 1e-8).reshape(4, -1)
    w = layer.weight_hh.detach().reshape(4, -1)
    expected = (d * w).abs().sum(1) / d.sum(1)
    torch.testing.assert_close(layer.hh_quantizer.scale, expected)


def _latent(rows=256, cols=96, seed=0):
    torch.manual_seed(seed)
    return torch.randn(rows, cols) * 0.05


@pytest.mark.parametrize("name", ["bc", "tc", "lab", "lat"])
def test_compact_keeps_the_quantized_weights_bit_for_bit(name):
    """BinaryConnect/TerConnect, and the loss-aware ones with their scale fixed by training:
    the latents in int8 per row (repaired near a decision boundary) quantize as before."""
    w = _latent()
    quantizer = build_quantizer(name)
    if quantizer.uses_second_moment:
        quantizer(w.clone())  # a training forward fixes the scale that eval mode reuses
    quantizer.eval()
    stored = quantizer.compact(w)
    assert stored is not None and stored.encoding == "int8_rows"
    assert torch.equal(quantizer.quantize(stored.decode()), quantizer.quantize(w))
    assert not quantizer.training
    quantizer.train()
    assert quantizer.compact(w) is not None and quantizer.training  # the mode is restored


def test_compact_repairs_entries_rounded_across_the_ternary_threshold():
    """Entries placed a hair on either side of TerConnect's threshold: plain int8 rounding
    moves some across it; compact moves them back (and the threshold they set)."""
    w = _latent(seed=3)
    quantizer = build_quantizer("tc").eval()
    blocks = w.reshape(4, -1)
    delta = 0.7 * blocks.abs().mean(1, keepdim=True)
    near = torch.rand_like(blocks) < 0.1
    blocks = torch.where(near, torch.sign(torch.randn_like(blocks)) * delta *
                         (1 + 1e-3 * torch.randn_like(blocks)), blocks)
    w = blocks.reshape_as(w)
    from nq_plugin.storage import ENCODINGS
    enc = ENCODINGS["int8_rows"]
    plain = quantizer.quantize(enc.decode(enc.encode(w)))
    assert not torch.equal(plain, quantizer.quantize(w))  # rounding alone is not exact
    stored = quantizer.compact(w)
    assert stored is not None
    assert torch.equal(quantizer.quantize(stored.decode()), quantizer.quantize(w))


@pytest.mark.parametrize("name", ["fp", "bwn", "twn"])
def test_compact_refuses_what_rounding_cannot_keep(name):
    """The identity, and scales computed from the latent values (mean|w|): None."""
    assert build_quantizer(name).compact(_latent()) is None
