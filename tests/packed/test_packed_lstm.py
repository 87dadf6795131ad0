"""Packed LSTM = the trained (unpacked) LSTM in eval mode, for every quantizer x norm."""
import copy

import pytest
import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.packed import PackedNQLSTM
from nq_plugin.packed.format import unpack_matrix
from nq_plugin.quant import attach_optimizer

NORMS = [("none", "shared"), ("weight", "shared"), ("layer", "shared"), ("batch", "shared"),
         ("batch", "separate"), ("power", "shared")]


def trained(quantizer, norm, stats, steps=3):
    torch.manual_seed(0)
    m = NQLSTM(37, 40, 2, quantizer=quantizer, norm=norm, bn_stats=stats, bn_max_steps=5)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    attach_optimizer(m, opt)
    for _ in range(steps):
        out, _ = m(torch.randn(7, 6, 37))
        out.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return m.eval()


@pytest.mark.parametrize("quantizer", ["fp", "bc", "tc", "bwn", "twn", "lab", "lat"])
@pytest.mark.parametrize("norm,stats", NORMS)
def test_packed_equals_unpacked(quantizer, norm, stats):
    m = trained(quantizer, norm, stats)
    packed = PackedNQLSTM.from_lstm(m)
    x = torch.randn(9, 3, 37)  # 9 steps > T_max = 5 for per-step statistics
    with torch.no_grad():
        a, (ha, ca) = m(x)
        b, (hb, cb) = packed(x)
        # continuing at step 9 with the carried state
        a2, _ = m(x[:4], (ha, ca), t0=9)
        b2, _ = packed(x[:4], (hb, cb), t0=9)
        # the exact values: the same model in fp64. Packed and unpacked are two fp32
        # computations (the packed one sums the products in another order, in the fused native
        # step); an unnormalized binary LSTM amplifies rounding over 13 steps, so the fp32 model
        # itself is up to ~1e-5 off. The packed model must be as close to the exact values as
        # the unpacked one (or within 1e-5 of it).
        m64 = copy.deepcopy(m).double()
        e, (_, ce) = m64(x.double())
        e2, _ = m64(x[:4].double(), tuple(t.double() for t in m64(x.double())[1]), t0=9)
        for got, fp32, exact in ((b, a, e), (cb, ca, ce), (b2, a2, e2)):
            own = float((fp32.double() - exact).abs().max())
            assert float((got.double() - exact).abs().max()) <= max(1e-5, 2 * own)


@pytest.mark.parametrize("quantizer,bits", [("bc", 1), ("bwn", 1), ("lab", 1), ("tc", 2),
                                            ("twn", 2), ("lat", 2)])
def test_round_trip_gives_the_quantized_weights(quantizer, bits):
    m = trained(quantizer, "weight", "shared")
    packed = PackedNQLSTM.from_lstm(m)
    for layer, p in zip(m.layers, packed.layers):
        w_q = layer._quantize(layer.hh_quantizer, layer.weight_hh).detach()
        planes = {k: getattr(p, f"hh_{k}") for k in (("plus",) if bits == 1
                                                      else ("nonzero", "negative"))}
        codes = unpack_matrix(planes, bits, layer.hidden_size)
        assert torch.equal(codes, torch.sign(w_q))  # exactly the quantized signs
        w_eff = layer.effective_weights()[1].detach()
        torch.testing.assert_close(codes * p.hh_scale[:, None], w_eff, rtol=1e-6, atol=1e-7)


def test_binary_512_weights_take_at_most_a_thirtieth():
    torch.manual_seed(0)
    m = NQLSTM(50, 512, quantizer="bc", norm="weight").eval()
    p = PackedNQLSTM.from_lstm(m).layers[0]
    packed_bytes = sum(getattr(p, k).numel() * 4 for k in ("ih_plus", "hh_plus"))
    fp32_bytes = 4 * (m.layers[0].weight_ih.numel() + m.layers[0].weight_hh.numel())
    assert packed_bytes * 30 <= fp32_bytes
    # equals the paper's 1 bit per weight up to the documented padding to 32 columns
    assert packed_bytes == 2048 * (64 + 512) // 8


@pytest.mark.parametrize("norm,opts", [("layer", {}), ("batch", {"bn_stats": "separate",
                                                                  "bn_max_steps": 4}),
                                       ("batch", {}), ("power", {})], ids=str)
def test_packed_batches_run_the_native_loop_with_the_folded_norms(norm, opts, backend_choice):
    """Batches above the native GEMV's 8 rows: the packed layer unpacks W_h once and runs the
    native recurrence with its folded normalization (AFFINE / ROW_BLOCKS); same outputs as the
    Python loop and as the unpacked model, carried state and steps beyond T_max included."""
    from nq_plugin import native as loader
    assert loader.extension() is not None, loader.build_error()
    from nq_plugin.nn import NQLSTM
    from nq_plugin.packed import PackedNQLSTM
    torch.manual_seed(0)
    model = NQLSTM(5, 8, 2, quantizer="tc", norm=norm, **opts)
    model(torch.randn(6, 16, 5))  # training statistics
    model.eval()
    packed = PackedNQLSTM.from_lstm(model)
    x = torch.randn(7, 16, 5)
    state = (torch.randn(2, 16, 8), torch.randn(2, 16, 8))
    with torch.no_grad():
        ref, (h, c) = model(x, state, t0=2)
        outs = {}
        for loop in ("native", "python"):
            backend_choice(recurrence=loop)
            outs[loop] = packed(x, state, t0=2)
    for out, (ph, pc) in outs.values():
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pc, c, atol=1e-5, rtol=1e-5)


def test_fused_step_tables_follow_new_weights():
    """The fused step keeps its folded tables between calls; loading other weights into the
    same module (in place, as load_state_dict does) must be seen by the next call."""
    first = PackedNQLSTM.from_lstm(trained("bc", "batch", "separate"))
    torch.manual_seed(7)
    other = NQLSTM(37, 40, 2, quantizer="bc", norm="batch", bn_stats="separate", bn_max_steps=5)
    with torch.no_grad():
        other(torch.randn(7, 6, 37))
    second = PackedNQLSTM.from_lstm(other.eval())
    x = torch.randn(3, 2, 37)  # batch 2: the fused native step
    with torch.no_grad():
        before = first(x)[0]
        first.load_state_dict(second.state_dict())
        after, expected = first(x)[0], second(x)[0]
    assert not torch.allclose(before, expected)
    torch.testing.assert_close(after, expected, atol=0, rtol=0)
