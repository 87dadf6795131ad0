"""NQLSTM against torch.nn.LSTM, fused path against loop path, gradients, bad input."""
import copy

import pytest
import torch

from nq_plugin.nn import NQLSTM
from nq_plugin.quant import QUANTIZERS
from nq_plugin.norm import NORMALIZATIONS


def copy_from_torch(nq: NQLSTM, ref: torch.nn.LSTM):
    with torch.no_grad():
        for i, layer in enumerate(nq.layers):
            layer.weight_ih.copy_(getattr(ref, f"weight_ih_l{i}"))
            layer.weight_hh.copy_(getattr(ref, f"weight_hh_l{i}"))
            layer.bias.copy_(getattr(ref, f"bias_ih_l{i}") + getattr(ref, f"bias_hh_l{i}"))


def set_loop(model, loop):
    for layer in model.layers:
        layer.force_loop = loop


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("loop", [False, True])
def test_fp_none_matches_torch_lstm(layers, loop):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(7, 16, layers)
    nq = NQLSTM(7, 16, layers)
    copy_from_torch(nq, ref)
    set_loop(nq, loop)
    x = torch.randn(9, 3, 7)
    state = (torch.randn(layers, 3, 16), torch.randn(layers, 3, 16))
    out_ref, (h_ref, c_ref) = ref(x, state)
    out, (h, c) = nq(x, state)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=0)
    # gradients w.r.t. the weights agree too
    out_ref.sum().backward()
    out.sum().backward()
    torch.testing.assert_close(nq.layers[-1].weight_hh.grad,
                               getattr(ref, f"weight_hh_l{layers - 1}").grad, atol=1e-5, rtol=0)


def test_batch_first():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 5, batch_first=True)
    nq = NQLSTM(4, 5, batch_first=True)
    copy_from_torch(nq, ref)
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(nq(x)[0], ref(x)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("quantizer", ["bc", "tc", "bwn", "twn"])
@pytest.mark.parametrize("norm", ["none", "weight"])
def test_fused_equals_loop(quantizer, norm):
    torch.manual_seed(0)
    fused = NQLSTM(5, 8, 2, quantizer=quantizer, norm=norm)
    loop = NQLSTM(5, 8, 2, quantizer=quantizer, norm=norm)
    loop.load_state_dict(fused.state_dict())
    set_loop(loop, True)
    x = torch.randn(6, 3, 5)
    a, (ha, ca) = fused(x)
    b, (hb, cb) = loop(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ca, cb, atol=1e-5, rtol=0)
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    for pa, pb in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm", ["weight", "layer", "batch", "power"])
def test_gradients_reach_latent_weights_and_norm_parameters(norm):
    torch.manual_seed(0)
    m = NQLSTM(5, 8, 1, quantizer="bc", norm=norm)
    out, _ = m(torch.randn(4, 3, 5))
    out.pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
@pytest.mark.parametrize("norm", sorted(NORMALIZATIONS))
def test_every_quantizer_norm_trains_and_evaluates(quantizer, norm):
    torch.manual_seed(0)
    m = NQLSTM(5, 8, 2, quantizer=quantizer, norm=norm, bn_stats="separate", bn_max_steps=3)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    from nq_plugin.quant import attach_optimizer
    attach_optimizer(m, opt)
    x = torch.randn(6, 4, 5)
    target = torch.randn(6, 4, 8)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        out, _ = m(x)
        loss = (out - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses  # and it learns
    m.eval()
    out, (h, c) = m(torch.randn(10, 2, 5))  # longer than T_max in eval
    assert out.shape == (10, 2, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("norm,opts", [
    ("layer", {}), ("batch", {"bn_stats": "shared"}),
    ("batch", {"bn_stats": "separate", "bn_max_steps": 2}), ("power", {"pn_warmup": 3}),
    ("power", {}),
])
def test_gradcheck_lstm_loop_paths(norm, opts):
    torch.manual_seed(0)
    m = NQLSTM(3, 2, 1, quantizer="fp", norm=norm, **opts).double()
    x = torch.randn(3, 4, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, 4, 2, dtype=torch.double, requires_grad=True)
    params = list(m.parameters())

    def run(x, h0, *p):
        for layer in m.layers:  # freeze the PowerNorm iteration counter during gradcheck
            for n in (layer.ih_norm, layer.hh_norm):
                if hasattr(n, "iterations"):
                    n.iterations.fill_(1)
                    n.forward_accum.zero_()
                    n.backward_accum.zero_()
        return m(x, (h0, torch.zeros_like(h0)))[0]

    assert torch.autograd.gradcheck(run, (x, h0, *params))


@pytest.mark.parametrize("norm", ["none", "weight", "layer"])
def test_carried_state_equals_one_pass(norm):
    torch.manual_seed(0)
    m = NQLSTM(5, 8, 2, quantizer="bc", norm=norm).eval()
    x = torch.randn(12, 3, 5)
    full, (h_full, c_full) = m(x)
    state, outs = None, []
    for seg in x.split(5):
        out, state = m(seg, state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(state[1], c_full, atol=1e-5, rtol=0)


def test_step_offset_selects_per_step_statistics():
    torch.manual_seed(0)
    m = NQLSTM(3, 4, 1, norm="batch", bn_stats="separate", bn_max_steps=10)
    for _ in range(3):
        m(torch.randn(10, 8, 3) * torch.arange(1.0, 11).reshape(10, 1, 1))
    m.eval()
    x = torch.randn(10, 2, 3)
    full, _ = m(x)
    first, state = m(x[:6])
    rest, _ = m(x[6:], state, t0=6)  # continue at step 6 with its statistics
    torch.testing.assert_close(torch.cat([first, rest]), full, atol=1e-5, rtol=0)
    wrong, _ = m(x[6:], state, t0=0)
    assert not torch.allclose(wrong, rest, atol=1e-4)


def test_quantize_input_off_keeps_w_x_full_precision():
    m = NQLSTM(1, 6, quantizer="bc", quantize_input=False)
    layer = m.layers[0]
    w_ih, w_hh = layer.effective_weights()
    torch.testing.assert_close(w_ih, layer.weight_ih)
    assert set(w_hh.unique().tolist()) <= {-1.0, 1.0}


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown quantizer 'binary'"):
        NQLSTM(3, 4, quantizer="binary")
    with pytest.raises(ValueError, match="unknown normalization 'instance'"):
        NQLSTM(3, 4, norm="instance")
    with pytest.raises(ValueError, match="hidden_size must be positive"):
        NQLSTM(3, 0)
    m = NQLSTM(3, 4)
    with pytest.raises(ValueError, match="input has 5 features.*input_size=3"):
        m(torch.randn(2, 2, 5))
    with pytest.raises(ValueError, match="initial state"):
        m(torch.randn(2, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
    with pytest.raises(RuntimeError, match="attach_optimizer"):
        NQLSTM(3, 4, quantizer="lab")(torch.randn(2, 2, 3))
    # evaluation of a lab model without optimizer state works (stored / unit preconditioner)
    NQLSTM(3, 4, quantizer="lab").eval()(torch.randn(2, 2, 3))


@pytest.mark.parametrize("norm,opts", [
    ("layer", {}), ("batch", {"bn_stats": "shared"}),
    ("batch", {"bn_stats": "separate", "bn_max_steps": 4}), ("power", {"pn_warmup": 1}),
    ("power", {}),
])
@pytest.mark.parametrize("quantizer", ["fp", "bc"])
def test_manual_backward_loop_equals_autograd_loop(norm, opts, quantizer):
    """The hand-written backward of the recurrence equals autograd through the norm's own step,
    over several training iterations (running statistics, PowerNorm's nu and warmup included)."""
    torch.manual_seed(0)
    manual = NQLSTM(5, 8, 2, quantizer=quantizer, norm=norm, **opts)
    reference = NQLSTM(5, 8, 2, quantizer=quantizer, norm=norm, **opts)
    reference.load_state_dict(manual.state_dict())
    for layer in reference.layers:
        layer.loop_impl = "autograd"
    for it in range(3):
        x = torch.randn(6, 4, 5)
        state = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
        outs = []
        for m in (manual, reference):
            out, (h, c) = m(x, state)
            (out.pow(2).sum() + h.sum() + c.pow(2).sum()).backward()
            outs.append((out, h, c))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        for (name, pa), pb in zip(manual.named_parameters(), reference.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-4, rtol=1e-4, msg=name)
            pa.grad = pb.grad = None
    for (name, a), b in zip(manual.named_buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    if norm == "power":
        assert manual.layers[0].hh_norm.nu.abs().sum() > 0  # the approximate backward was used


@pytest.mark.parametrize("norm", ["weight", "layer"])
def test_eval_mode_caches_weights_and_invalidates_them(norm, monkeypatch):
    """Inference reuses the quantized, normalized weights until a parameter (optimizer step,
    load_state_dict) or the mode changes."""
    from nq_plugin.nn import NQLSTM
    torch.manual_seed(0)
    lstm = NQLSTM(5, 8, quantizer="bc", norm=norm).eval()
    layer = lstm.layers[0]
    calls = []
    real = layer._compute_effective_weights
    monkeypatch.setattr(layer, "_compute_effective_weights",
                        lambda: calls.append(1) or real())
    x = torch.randn(3, 2, 5)
    with torch.no_grad():
        a, _ = lstm(x)
        b, _ = lstm(x)
    assert len(calls) == 1 and torch.equal(a, b)
    opt = torch.optim.SGD(lstm.parameters(), lr=1.0)
    lstm.train()
    lstm(x)[0].sum().backward()
    opt.step()  # an in-place parameter update
    lstm.eval()
    n = len(calls)
    with torch.no_grad():
        c, _ = lstm(x)
        assert len(calls) == n + 1
        other = NQLSTM(5, 8, quantizer="bc", norm=norm)
        lstm.load_state_dict(other.state_dict())
        d, _ = lstm(x)
        assert len(calls) == n + 2
        other.eval()
        torch.testing.assert_close(d, other(x)[0])
        with torch.no_grad():
            lstm.layers[0].weight_hh.mul_(-1)  # any in-place change is seen
        e, _ = lstm(x)
        assert len(calls) == n + 3 and not torch.equal(d, e)
    lstm(x)  # grad enabled: never cached, gradients reach the weights
    assert len(calls) == n + 4


@pytest.mark.parametrize("steps,batch", [(1, 1), (1, 16), (4, 2), (12, 3)])
def test_eval_keeps_the_recurrent_layout_and_matches_torch_lstm(steps, batch, monkeypatch):
    """Eval without autograd: W_h's oneDNN layout is made once and kept with the cached weights
    (single steps run the native loop with it, instead of torch's fused LSTM reordering its
    weights every call; longer calls keep torch's LSTM and make none); results
    equal torch.nn.LSTM's, step by step with the state carried, and a weight change makes a
    new layout."""
    import nq_plugin.nn.lstm as lstm_module
    from nq_plugin.nn.step_products import prepacked
    torch.manual_seed(0)
    ref = torch.nn.LSTM(7, 16).eval()
    nq = NQLSTM(7, 16).eval()
    copy_from_torch(nq, ref)
    reorders = []
    monkeypatch.setattr(lstm_module, "prepacked",
                        lambda w, b: reorders.append(b) or prepacked(w, b))
    x = torch.randn(3, steps, batch, 7)
    state, ref_state = None, None
    with torch.no_grad():
        for chunk in x:  # three calls, the state carried
            out, state = nq(chunk, state)
            ref_out, ref_state = ref(chunk, ref_state)
            torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
            torch.testing.assert_close(state[1], ref_state[1], atol=1e-5, rtol=0)
        kept = [batch] if steps == 1 else []
        assert reorders == kept  # one layout for the three calls
        nq.layers[0].weight_hh.mul_(-1)
        ref.weight_hh_l0.mul_(-1)
        torch.testing.assert_close(nq(x[0])[0], ref(x[0])[0], atol=1e-5, rtol=0)
    assert reorders == kept * 2
    twin = copy.deepcopy(nq)  # a model holding a layout (an opaque oneDNN tensor) copies
    with torch.no_grad():
        torch.testing.assert_close(twin(x[0])[0], nq(x[0])[0], atol=0, rtol=0)


def test_a_misspelt_normalization_option_is_an_error_naming_the_valid_ones():
    """Regression: NQLSTM(..., norm="batch", bn_stat="separate") ran with shared statistics."""
    from nq_plugin.nn import NQLSTM
    with pytest.raises(TypeError, match=r"bn_stat.*bn_stats"):
        NQLSTM(3, 4, norm="batch", bn_stat="separate")
    NQLSTM(3, 4, norm="layer", bn_stats="separate")  # another norm's option: fine (flat CLI set)


def test_torch_save_of_the_module_and_deepcopy_keep_the_optimizer_tags(tmp_path):
    """Regression: torch.save(module) failed ("cannot pickle weakref") on the nq_layer tag, and
    copy.deepcopy dropped the tags (the paper's learning-rate scale then silently vanished)."""
    import copy
    import math
    from nq_plugin.nn import NQLSTM
    lstm = NQLSTM(5, 16, 2, quantizer="bc", norm="layer")
    torch.save(lstm, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    for m in (loaded, copy.deepcopy(lstm)):
        for layer in m.layers:
            assert layer.weight_hh.nq_latent_scale == pytest.approx(2 * math.sqrt(16))
            assert layer.weight_hh.nq_layer() is layer and layer.weight_ih.nq_layer() is layer
        torch.testing.assert_close(m(torch.ones(2, 1, 5))[0], lstm(torch.ones(2, 1, 5))[0])


def test_the_core_works_without_fairseq():
    """The core (nn, quant, norm, sizes, packed) is plain PyTorch: importable and usable in a
    process where fairseq cannot be imported."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'fairseq' or name.startswith('fairseq.'):\n"
        "            raise ImportError('fairseq hidden for this test')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import torch\n"
        "from nq_plugin.nn import NQLSTM\n"
        "from nq_plugin.packed import PackedNQLSTM\n"
        "from nq_plugin.sizes import summary\n"
        "m = NQLSTM(5, 8, quantizer='bc', norm='layer').eval()\n"
        "out, _ = m(torch.randn(3, 2, 5))\n"
        "p = PackedNQLSTM.from_lstm(m)\n"
        "assert torch.allclose(p(torch.ones(3, 2, 5))[0], m(torch.ones(3, 2, 5))[0], atol=1e-5)\n"
        "summary(m, print_fn=None)\n"
        "assert 'fairseq' not in sys.modules\n"
        "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


@pytest.mark.parametrize("norm", ["none", "weight"])
def test_none_and_weight_norm_train_on_the_native_loop(built, norm, backend_choice, monkeypatch):
    """In training (autograd) a layer without a normalization on activations runs the native
    loop and its hand-written backward, not torch's fused LSTM, with torch's LSTM's results and
    gradients (to float32 rounding); without autograd a sequence still takes torch's LSTM (the
    same arithmetic whatever the segment length), and so does training where the loop is asked
    to run in Python (torch's LSTM is the fast path there)."""
    from nq_plugin.nn import NQLSTMLayer
    torch.manual_seed(0)
    model = NQLSTM(7, 16, 2, quantizer="bc", norm=norm)
    x = torch.randn(9, 3, 7)
    backend_choice(recurrence="auto")
    fused_calls = []
    real_fused = NQLSTMLayer._fused

    def counted(self, *args):
        fused_calls.append(1)
        return real_fused(self, *args)

    monkeypatch.setattr(NQLSTMLayer, "_fused", counted)
    out, (h, c) = model(x)
    (out.sin().sum() + h.sum()).backward()
    assert not fused_calls
    grads = [p.grad.clone() for p in model.parameters()]
    ref = copy.deepcopy(model)
    ref.zero_grad()
    backend_choice(recurrence="python")
    out_ref, (h_ref, _) = ref(x)
    (out_ref.sin().sum() + h_ref.sum()).backward()
    assert len(fused_calls) == 2  # both layers on torch's LSTM
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    for g, p in zip(grads, ref.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-4, rtol=1e-4)
    backend_choice(recurrence="auto")
    with torch.no_grad():
        model.eval()
        model(x)
    assert len(fused_calls) == 4
