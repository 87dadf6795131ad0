"""The native recurrence (nq_plugin/csrc/recurrence.cpp) against the Python loop
(nq_plugin/nn/recurrence.py): forward, backward and the running statistics, for every quantizer
x normalization with a native form, 1 and 2 layers, training and eval, carried state, per-step
statistics beyond T_max, dropout; gradcheck in double; the fallback when the extension cannot
be built, and the choice logged once."""
import copy
import logging
import os
import subprocess
import sys

import pytest
import torch

from nq_plugin import native as loader
from nq_plugin.logs import LogOnce
from nq_plugin.nn import NQLSTM

NORMS = [("layer", {}), ("batch", {"bn_stats": "shared"}),
         ("batch", {"bn_stats": "separate", "bn_max_steps": 4}), ("power", {}),
         ("power", {"pn_warmup": 5}), ("none", {}), ("weight", {})]


def run(model, x, state, t0, loop, backend_choice):
    backend_choice(recurrence=loop)
    model = copy.deepcopy(model)
    torch.manual_seed(5)  # the same dropout masks on both paths
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    out, (h, c) = model(x, state, t0=t0)
    (out.sin().sum() + h.sum() + 2 * c.sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return out, h, c, x.grad, state[0].grad, state[1].grad, grads, dict(model.named_buffers())


def close(a, b, scaled=None, **kw):
    """assert_close, or with ``scaled``: max |a - b| <= scaled * max(1, max |b|) (within 1e-5
    of the tensor's scale: float rounding, amplified by the normalizations, differs in the last
    bits between the fused C++ pass and the sequence of ATen ops)."""
    if scaled is None:
        torch.testing.assert_close(a, b, **kw)
        return
    err = float((a - b).detach().abs().max()) if a.numel() else 0.0
    bound = scaled * max(1.0, float(b.detach().abs().max()) if b.numel() else 0.0)
    assert err <= bound, f"{kw.get('msg', '')}: max difference {err:.3g} > {bound:.3g}"


def same_run(ref, other, **tol):
    """Outputs, states and gradients of two run() results within tol."""
    for a, b in zip(ref[:6], other[:6]):
        close(b, a, **tol)
    for name, g in ref[6].items():
        close(other[6][name], g, msg=name, **tol)


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", ["fp", "bc", "tc", "bwn", "twn", "lab", "lat"])
@pytest.mark.parametrize("norm,opts", NORMS, ids=lambda v: str(v))
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_native_equals_python(built, quantizer, norm, opts, layers, training, backend_choice):
    torch.manual_seed(0)
    model = NQLSTM(5, 8, layers, dropout=0.3 if layers == 2 else 0.0, quantizer=quantizer,
                   norm=norm, **opts)
    for layer in model.layers:
        layer.force_loop = True  # none / weight too
    if quantizer in ("lab", "lat"):
        opt = torch.optim.Adam(model.parameters())
        from nq_plugin.quant import attach_optimizer
        attach_optimizer(model, opt)
        model(torch.randn(3, 4, 5))[0].sum().backward()
        opt.step()
        opt.zero_grad()
    model.train(training)
    x = torch.randn(6, 4, 5)
    state = (torch.randn(layers, 4, 8), torch.randn(layers, 4, 8))
    t0 = 2  # steps 2..7: beyond T_max = 4 of the separate statistics
    py = run(model, x, state, t0, "python", backend_choice)
    nat = run(model, x, state, t0, "native", backend_choice)
    tol = dict(scaled=1e-5)
    same_run(py, nat, **tol)
    for name, buf in py[7].items():
        close(nat[7][name], buf, msg=name, **tol)


@pytest.mark.parametrize("norm,opts", NORMS[:5], ids=lambda v: str(v))
@pytest.mark.parametrize("inputs", [5, 1], ids=["projected", "fused-projection"])
def test_native_equals_python_in_double_to_rounding(built, norm, opts, inputs, backend_choice,
                                                     two_threads):
    """The same arithmetic: in float64 the two paths agree to ~1e-12 over 37 steps (more than
    the backward's chunk of 16 steps), on two threads (the step products split by columns between
    them, the elementwise work by rows); one input column runs the projection fused into the
    loop (sequential MNIST), gradients of x and W_x included; the running statistics too
    (PowerNorm's, which each thread adds up for its own rows)."""
    torch.manual_seed(1)
    model = NQLSTM(inputs, 8, 1, quantizer="tc", norm=norm, **opts).double()
    x = torch.randn(37, 3, inputs, dtype=torch.float64)
    state = (torch.randn(1, 3, 8, dtype=torch.float64), torch.randn(1, 3, 8, dtype=torch.float64))
    py = run(model, x, state, 0, "python", backend_choice)
    nat = run(model, x, state, 0, "native", backend_choice)
    same_run(py, nat, atol=1e-10, rtol=1e-9)
    for name, buf in py[7].items():
        close(nat[7][name], buf, msg=name, atol=1e-10, rtol=1e-9)


def python_and_native(model, steps, batch, backend_choice):
    """run() of ``model`` (float64) on the Python loop and on the native one, over the same
    random input and state of ``steps`` x ``batch``."""
    x = torch.randn(steps, batch, model.input_size, dtype=torch.float64)
    state = tuple(torch.randn(1, batch, model.hidden_size, dtype=torch.float64)
                  for _ in range(2))
    return (run(model, x, state, 0, "python", backend_choice),
            run(model, x, state, 0, "native", backend_choice))


@pytest.mark.parametrize("team", [1, 2, 3])
@pytest.mark.parametrize("norm,opts", [("layer", {}), ("batch", {"bn_stats": "separate"}),
                                       ("power", {})], ids=["layer", "batch", "power"])
def test_a_team_splits_the_step_products_by_columns(built, threads, team, norm, opts,
                                                    backend_choice):
    """A team of several threads forms each step product's columns for the whole batch (here
    asked at any hidden size, step_split=columns: split unevenly, H=7, F=28; batch 3) and meets
    between the products and the elementwise work; a team of one forms them whole. Both are the
    Python loop's arithmetic in float64, over more steps than a chunk of dL/dW_h."""
    from nq_plugin.nn import step_products as loop
    threads(team)
    assert loop.team_splits_columns(20, 300) == (team > 1)  # PTB word
    assert not loop.team_splits_columns(100, 100)  # sequential MNIST: W_h fits a cache
    assert not loop.team_splits_columns(1, 300)  # a team of one
    backend_choice(step_split="rows")
    assert not loop.team_splits_columns(20, 300)
    backend_choice(step_split="columns")
    assert loop.team_splits_columns(3, 7) == (team > 1)
    torch.manual_seed(3)
    model = NQLSTM(5, 7, 1, quantizer="tc", norm=norm, **opts).double()
    py, nat = python_and_native(model, 37, 3, backend_choice)
    same_run(py, nat, atol=1e-10, rtol=1e-9)
    for name, buf in py[7].items():
        close(nat[7][name], buf, msg=name, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("split", ["columns", "rows"])
def test_a_wide_batchs_longer_chunks_of_dl_dw_h(built, threads, split, backend_choice):
    """From 64 batch rows on dL/dW_h is formed over chunks of 32 steps (70 steps: 32, 32, 6),
    either split: the Python loop's arithmetic in float64."""
    threads(2)
    backend_choice(step_split=split)
    torch.manual_seed(8)
    model = NQLSTM(3, 5, 1, quantizer="bc", norm="layer").double()
    py, nat = python_and_native(model, 70, 64, backend_choice)
    same_run(py, nat, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("split", ["columns", "rows"])
@pytest.mark.parametrize("layout", ["plain", "onednn", "panels"])
def test_a_split_products_weight_in_each_layout_gives_the_same_loop(built, threads, layout,
                                                                    split, backend_choice):
    """Each thread's part of a product split by columns, or the whole weight of one split by
    rows, in each layout (NQ_PLUGIN_STEP_GEMM; float32; a layout this build lacks is skipped):
    the same loop as a team of one within float32 rounding, gradients included; the parts are
    recurrence.cpp's split (the first ones one longer)."""
    from nq_plugin.nn import step_products as loop
    w = torch.randn(28, 7)
    threads(2)
    if layout not in loop.part_candidates(w):
        pytest.skip(f"the {layout} layout does not run here")
    backend_choice(step_split=split, step_gemm=layout)
    plan = loop.step_weights(w, 3, training=True)
    assert plan.layout == getattr(built.StepLayout, layout.upper())
    assert len(plan.parts) == (2 if split == "columns" else 1)
    torch.manual_seed(4)
    model = NQLSTM(5, 7, 1, quantizer="tc", norm="layer")
    x = torch.randn(37, 3, 5)
    state = (torch.randn(1, 3, 7), torch.randn(1, 3, 7))
    split = run(model, x, state, 0, "native", backend_choice)
    threads(1)
    whole = run(model, x, state, 0, "native", backend_choice)
    same_run(whole, split, atol=1e-5, rtol=1e-5)


def test_weights_planned_for_another_team_run_on_views_of_w_h(built, backend_choice,
                                                              monkeypatch):
    """Parts planned for a team of 3 (step_weights) and run by a team of 2 (columns from views
    of W_h) or of 1 (the whole product on W_h): the Python loop's arithmetic in float64, as the
    planned team would (the nested region of fewer threads, or the threads changed since)."""
    from nq_plugin.nn import recurrence as loop
    from nq_plugin.nn import step_products
    backend_choice(step_split="columns")
    planned = step_products.step_weights

    def for_three(weight, batch, **kw):
        threads = torch.get_num_threads()
        torch.set_num_threads(3)
        try:
            return planned(weight, batch, **kw)
        finally:
            torch.set_num_threads(threads)

    torch.manual_seed(6)
    model = NQLSTM(5, 7, 1, quantizer="tc", norm="layer").double()
    x = torch.randn(21, 3, 5, dtype=torch.float64)
    state = (torch.randn(1, 3, 7, dtype=torch.float64), torch.randn(1, 3, 7, dtype=torch.float64))
    py = run(model, x, state, 0, "python", backend_choice)
    monkeypatch.setattr(loop, "step_weights", for_three)
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            same_run(py, run(model, x, state, 0, "native", backend_choice), atol=1e-10,
                     rtol=1e-9)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("norm,opts", [("layer", {}), ("batch", {"bn_stats": "separate",
                                                                  "bn_max_steps": 2})])
def test_gradcheck_of_the_native_loop(built, norm, opts, backend_choice):
    from nq_plugin.nn.recurrence import recurrence
    from nq_plugin.norm import build_normalization
    backend_choice(recurrence="native")
    torch.manual_seed(2)
    hidden, batch, steps = 3, 3, 4
    nx = build_normalization(norm, 4 * hidden, **opts).double()
    nh = build_normalization(norm, 4 * hidden, **opts).double()
    d = dict(dtype=torch.float64, requires_grad=True)
    px = torch.randn(steps, batch, 4 * hidden, **d)
    h0, c0 = torch.randn(batch, hidden, **d), torch.randn(batch, hidden, **d)
    w = torch.randn(4 * hidden, hidden, **d)
    shift, gx, gh = (torch.randn(4 * hidden, **d) for _ in range(3))

    def f(px, h0, c0, w, shift, gx, gh):
        return recurrence(px, h0, c0, w, shift, gx, gh, nx, nh, 1)

    assert torch.autograd.gradcheck(f, (px, h0, c0, w, shift, gx, gh), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("columns", [1, 3])
def test_gradcheck_of_the_fused_input_projection(built, columns, backend_choice, monkeypatch):
    """Narrow inputs: px = x W_x^T inside the native loop (no GEMM outside: F.linear must not
    run), gradients of x and W_x by gradcheck."""
    from nq_plugin.nn.recurrence import FUSED_INPUT_COLUMNS, recurrence
    from nq_plugin.norm import build_normalization
    assert columns <= FUSED_INPUT_COLUMNS
    backend_choice(recurrence="native")
    torch.manual_seed(3)
    hidden, batch, steps = 3, 3, 5
    nx = build_normalization("batch", 4 * hidden, bn_stats="separate", bn_max_steps=2).double()
    nh = build_normalization("layer", 4 * hidden).double()
    d = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(steps, batch, columns, **d)
    w_ih = torch.randn(4 * hidden, columns, **d)
    h0, c0 = torch.randn(batch, hidden, **d), torch.randn(batch, hidden, **d)
    w = torch.randn(4 * hidden, hidden, **d)
    shift = torch.randn(4 * hidden, **d)

    def linear_must_not_run(*args, **kwargs):
        raise AssertionError("the projection ran outside the loop")

    monkeypatch.setattr(torch.nn.functional, "linear", linear_must_not_run)

    def f(x, w_ih, h0, c0, w, shift):
        return recurrence(x, h0, c0, w, shift, None, None, nx, nh, 0, input_weight=w_ih)

    assert torch.autograd.gradcheck(f, (x, w_ih, h0, c0, w, shift), eps=1e-6, atol=1e-6)


def one_hot_input(steps, batch, columns, spoiled=False):
    """(steps, batch, columns) one-hot rows (the char models' input); ``spoiled``: one row with
    a second 1, so that the input is no longer one-hot."""
    x = torch.nn.functional.one_hot(torch.randint(columns, (steps, batch)), columns).float()
    if spoiled:
        x[3, 5, (int(x[3, 5].argmax()) + 1) % columns] = 1.0
    return x


def test_which_input_projections_the_loop_fuses(built):
    """K <= 4 input columns in any dtype (one pass over F per column); up to 64 in float32 where
    the extension has the step GEMM and NQ_PLUGIN_STEP_GEMM allows it (auto, panels: the char
    models' 50 symbols), up to 256 where the input is one-hot; never a weight of another dtype,
    nor a wider input."""
    from nq_plugin import backend
    from nq_plugin.nn.recurrence import (FUSED_GEMM_INPUT_COLUMNS, FUSED_INPUT_COLUMNS,
                                         fuses_input)
    gemm = built.step_gemm_supported()
    for columns, dtype, fused in [(1, torch.float64, True), (4, torch.float32, True),
                                  (5, torch.float64, False), (50, torch.float32, gemm),
                                  (64, torch.float32, gemm), (65, torch.float32, False),
                                  (300, torch.float32, False)]:
        x = torch.zeros(2, 3, columns, dtype=dtype)
        assert fuses_input(x, torch.zeros(8, columns, dtype=dtype)) is fused, (columns, dtype)
    x = torch.zeros(2, 3, 3)
    assert not fuses_input(x, torch.zeros(8, 3, dtype=torch.float64))
    assert FUSED_INPUT_COLUMNS == 4 and FUSED_GEMM_INPUT_COLUMNS == 64
    x, w = torch.zeros(2, 3, 50), torch.zeros(8, 50)
    for choice, fused in [("plain", False), ("onednn", False), ("panels", gemm)]:
        with backend.use(step_gemm=choice):  # the step products' choice holds here too
            assert fuses_input(x, w) is fused, choice
    # one-hot rows up to 256 columns (War and Peace's 91 symbols), dense ones not past 64
    w = torch.zeros(8, 91)
    assert fuses_input(one_hot_input(2, 3, 91), w) is gemm
    assert not fuses_input(one_hot_input(6, 7, 91, spoiled=True), w)
    assert not fuses_input(one_hot_input(2, 3, 257), torch.zeros(8, 257))


def test_one_hot_columns_are_found_only_where_every_row_is_one_hot(built):
    """The fused projection's test for one-hot input: each row's column where every row has one
    entry 1 and zeros elsewhere; None for a row of zeros, an entry other than 1, two ones."""
    for dtype in (torch.float32, torch.float64):
        index = torch.tensor([3, 0, 4, 4, 1])
        x = torch.nn.functional.one_hot(index, 6).to(dtype)
        assert torch.equal(built.one_hot_columns(x), index)
        for row, values in [(2, [0.0] * 6), (0, [0, 0, 0, 2.0, 0, 0]),
                            (4, [0, 1.0, 0, 0, 1.0, 0]), (1, [-1.0, 0, 0, 0, 0, 0])]:
            bad = x.clone()
            bad[row] = torch.tensor(values, dtype=dtype)
            assert built.one_hot_columns(bad) is None, values
    assert built.one_hot_columns(torch.zeros(3, 0)) is None


@pytest.mark.parametrize("norm,opts", [("layer", {}),
                                       ("batch", {"bn_stats": "separate", "bn_max_steps": 4}),
                                       ("power", {})], ids=["layer", "batch", "power"])
@pytest.mark.parametrize("grad_input", [True, False], ids=["dx", "no-dx"])
@pytest.mark.parametrize("kind", ["dense", "one-hot", "one-hot-spoiled"])
def test_a_wider_input_projection_runs_in_the_loop_through_the_step_gemm(
        built, norm, opts, grad_input, kind, backend_choice, two_threads, monkeypatch):
    """50 input columns in float32 (the char models' symbols): px = x W_x^T and dL/dx by the
    step GEMM inside the native loop and dL/dW_x by one GEMM per chunk of steps (70 steps of 64
    sequences on two threads: chunks of 32, the last one partial; F.linear never runs), or, for
    one-hot input, px a copy of W_x^T's rows and dL/dW_x^T's rows sums of dL/dpx (a row that is
    not one-hot sends the whole input to the GEMMs), with and without dL/dx: the outputs,
    states, gradients and running statistics of the same loop with the projection and its
    backward as GEMMs outside, to float32 rounding (that loop is the Python loop's arithmetic:
    the tests above; over 70 float32 steps both drift from the Python loop alike, by the
    normalizations' amplified rounding)."""
    if not built.step_gemm_supported():
        pytest.skip("this build of the extension has no step GEMM (AVX2 and FMA)")
    from nq_plugin.nn import recurrence as rec
    torch.manual_seed(4)
    model = NQLSTM(50, 8, 1, quantizer="bc", norm=norm, **opts)
    x = (torch.randn(70, 64, 50) if kind == "dense"
         else one_hot_input(70, 64, 50, spoiled=kind == "one-hot-spoiled"))
    assert (built.one_hot_columns(x.view(-1, 50)) is not None) == (kind == "one-hot")
    state = (torch.randn(1, 64, 8), torch.randn(1, 64, 8))
    assert rec.fuses_input(x, model.layers[0].weight_ih)
    backend_choice(recurrence="native")

    def run_once():
        net = copy.deepcopy(model)
        xs = x.clone().requires_grad_(grad_input)
        out, (h, c) = net(xs, tuple(s.clone() for s in state))
        (out.sin().sum() + h.sum() + 2 * c.sum()).backward()
        grads = {n: p.grad for n, p in net.named_parameters()}
        return [out, h, c] + ([xs.grad] if grad_input else []), grads, dict(net.named_buffers())

    with monkeypatch.context() as outside:
        outside.setattr(rec, "fuses_input", lambda x, weight: False)
        ref = run_once()

    def linear_must_not_run(*args, **kwargs):
        raise AssertionError("the projection ran outside the loop")

    monkeypatch.setattr(torch.nn.functional, "linear", linear_must_not_run)
    fused = run_once()
    for a, b in zip(ref[0], fused[0]):
        close(b, a, scaled=1e-5)
    assert set(ref[1]) == set(fused[1]) and "layers.0.weight_ih" in ref[1]
    for name, g in ref[1].items():
        close(fused[1][name], g, msg=name, scaled=1e-5)
    for name, buf in ref[2].items():
        close(fused[2][name], buf, msg=name, scaled=1e-5)


def test_without_the_extension_auto_falls_back_and_native_fails_loudly(monkeypatch, caplog,
        backend_choice):
    from nq_plugin.nn import recurrence as rec
    monkeypatch.setattr(loader, "_module", None)
    monkeypatch.setattr(loader, "_failed", "simulated: no compiler")
    monkeypatch.setattr(rec, "_log_once", LogOnce(rec.logger))
    model = NQLSTM(3, 4, quantizer="bc", norm="layer")
    x = torch.randn(5, 2, 3)
    backend_choice(recurrence="auto")
    with caplog.at_level(logging.INFO, logger="nq_plugin.nn.recurrence"):
        out, _ = model(x)
        model(x)
    messages = [r.getMessage() for r in caplog.records if "LSTM loop" in r.getMessage()]
    assert len(messages) == 1 and "runs in Python" in messages[0] and "simulated" in messages[0]
    backend_choice(recurrence="python")
    torch.testing.assert_close(model(x)[0], out)
    backend_choice(recurrence="native")
    with pytest.raises(RuntimeError, match="NQ_PLUGIN_RECURRENCE=native.*simulated"):
        model(x)
    with pytest.raises(ValueError, match="auto, native or python"):
        backend_choice(recurrence="fastest")
    from nq_plugin.backend import Backend
    with pytest.raises(ValueError, match="NQ_PLUGIN_RECURRENCE='fastest': use auto, native or"):
        Backend.from_environ({"NQ_PLUGIN_RECURRENCE": "fastest"})


def test_the_native_choice_is_logged_once(built, monkeypatch, caplog, backend_choice):
    from nq_plugin.nn import recurrence as rec
    monkeypatch.setattr(rec, "_log_once", LogOnce(rec.logger))
    backend_choice(recurrence="auto")
    model = NQLSTM(3, 4, quantizer="bc", norm="batch")
    with caplog.at_level(logging.INFO, logger="nq_plugin.nn.recurrence"):
        for _ in range(3):
            model(torch.randn(5, 2, 3))
    messages = [r.getMessage() for r in caplog.records if "LSTM loop" in r.getMessage()]
    assert messages == ["nq_plugin: the LSTM loop runs natively (nq_plugin/csrc/recurrence.cpp;"
                        " NQ_PLUGIN_RECURRENCE=python for the Python loop)"]


def test_batch_norm_with_one_sequence_is_refused_on_the_native_path_too(built, backend_choice):
    backend_choice(recurrence="native")
    model = NQLSTM(3, 4, quantizer="bc", norm="batch")
    with pytest.raises(ValueError, match="at least 2 sequences"):
        model(torch.randn(5, 1, 3))


@pytest.mark.parametrize("warmup", [0, 2])
def test_power_norm_trains_the_same_over_iterations(built, warmup, backend_choice):
    """PowerNorm's statistics carry over iterations (psi^2, nu, the accumulators): four SGD
    steps across its warmup and running phases give the same model on both loops (fp64)."""
    torch.manual_seed(3)
    base = NQLSTM(5, 8, 2, quantizer="tc", norm="power", pn_warmup=warmup).double()
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    models = {}
    for loop in ("python", "native"):
        backend_choice(recurrence=loop)
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(4):
            opt.zero_grad()
            out, (h, c) = model(x)
            (out.sin().sum() + c.sum()).backward()
            opt.step()
        models[loop] = model
    for (name, a), b in zip(models["python"].state_dict().items(),
                            models["native"].state_dict().values()):
        close(b.double(), a.double(), atol=1e-9, rtol=1e-9, msg=name)


def test_an_unusable_compiler_falls_back_to_python_and_says_why(tmp_path):
    """A machine without a working compiler: CXX=/bin/false and an empty extensions folder --
    the build fails, a layer-norm model still trains (Python loop), the log says why."""
    import os
    import subprocess
    import sys
    import textwrap
    from tests.fairseq_utils import ROOT
    code = textwrap.dedent("""
        import logging, torch
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        from nq_plugin.nn import NQLSTM
        from nq_plugin import native
        model = NQLSTM(3, 4, quantizer="bc", norm="layer")
        out, _ = model(torch.randn(5, 2, 3))
        out.sum().backward()
        assert native.extension() is None and native.build_error()
        print("trained", float(model.layers[0].weight_hh.grad.abs().sum()) > 0)
    """)
    env = dict(os.environ, CXX="/bin/false", TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"),
               NQ_PLUGIN_RECURRENCE="auto")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trained True" in res.stdout
    assert "the native extension could not be built" in res.stderr
    assert "the LSTM loop runs in Python (the native extension did not build" in res.stderr


AVX2_LOOP = """
import contextlib, torch
from nq_plugin import backend, native as loader
from nq_plugin.nn import NQLSTM
from tests.nn.test_native_recurrence import NORMS, close, run, same_run
m = loader.extension()
assert m is not None, loader.build_error()
assert m.__name__.endswith("x86_64_v3"), m.__name__
torch.set_num_threads(2)
checked = 0
# float32: within 1e-4 of each tensor's scale (PowerNorm's dL/dW_x of one input column, summed
# over 126 rows, differs by 5e-5 of its scale in the AVX-512 build too: float rounding)
with contextlib.ExitStack() as stack:
    choice = lambda **changes: stack.enter_context(backend.use(**changes))
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        for norm, opts in NORMS[:5]:
            for inputs in (5, 1):  # projected, and the projection fused into the loop
                torch.manual_seed(1)
                model = NQLSTM(inputs, 20, 1, quantizer="tc", norm=norm, **opts).to(dtype)
                x = torch.randn(21, 6, inputs, dtype=dtype)
                state = tuple(torch.randn(1, 6, 20, dtype=dtype) for _ in range(2))
                py = run(model, x, state, 0, "python", choice)
                nat = run(model, x, state, 0, "native", choice)
                same_run(py, nat, scaled=tol)
                for name, buf in py[7].items():
                    close(nat[7][name], buf, msg=name, scaled=tol)
                checked += len(py[:6]) + len(py[6]) + len(py[7])
print("checked", checked)
"""


@pytest.mark.slow
def test_the_avx2_only_build_runs_the_loop_as_the_python_loop(built):
    """Where the CPU has AVX-512 the loop's elementwise work runs AVX-512 code, elsewhere AVX2's:
    the AVX2 build (NQ_PLUGIN_MARCH=x86-64-v3, what an AVX2-only CPU runs) agrees with the Python
    loop in float64 (to ~1e-9) and float32 (to 1e-4 of each tensor's scale), forward, backward
    and running statistics, for each native normalization, on two threads, with H=20 (a partial
    vector of either width) and the fused input projection."""
    env = dict(os.environ, NQ_PLUGIN_MARCH="x86-64-v3")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", AVX2_LOOP], capture_output=True, text=True,
                         env=env, timeout=900, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    word, count = res.stdout.split()[-2:]
    # 20 cases (2 dtypes x 5 normalizations x 2 input widths), each out, h, c, dL/dx and more
    assert word == "checked" and int(count) >= 20 * 4, res.stdout


THREAD_LIMITED_LOOP = """
import contextlib, sys, torch
from nq_plugin import backend
from nq_plugin.nn import NQLSTM
from tests.nn.test_native_recurrence import NORMS, close, run, same_run
torch.set_num_threads(int(sys.argv[1]))
checked = 0
with contextlib.ExitStack() as stack:
    choice = lambda **changes: stack.enter_context(backend.use(**changes))
    for split in ("auto", "rows", "columns"):
        choice(step_split=split)
        # float32 at the AVX2 check's sizes (float32's rounding grows past 1e-4 over the
        # float64 case's 37 steps of H=7)
        for dtype, tol, (steps, batch, hidden) in ((torch.float64, 1e-9, (37, 3, 7)),
                                                   (torch.float32, 1e-4, (21, 6, 20))):
            for norm, opts in (NORMS[0], NORMS[2], NORMS[3]):  # layer, batch, power
                for inputs in (5, 1):  # projected, and the projection fused into the loop
                    torch.manual_seed(3)
                    model = NQLSTM(inputs, hidden, 1, quantizer="tc", norm=norm,
                                   **opts).to(dtype)
                    x = torch.randn(steps, batch, inputs, dtype=dtype)
                    state = tuple(torch.randn(1, batch, hidden, dtype=dtype) for _ in range(2))
                    py = run(model, x, state, 0, "python", choice)
                    nat = run(model, x, state, 0, "native", choice)
                    same_run(py, nat, scaled=tol)
                    for name, buf in py[7].items():
                        close(nat[7][name], buf, msg=name, scaled=tol)
                    # the Python loop itself against its own run on one thread (oneDNN's
                    # products were wrong with more threads than the limit)
                    torch.set_num_threads(1)
                    same_run(run(model, x, state, 0, "python", choice), py, scaled=tol)
                    torch.set_num_threads(int(sys.argv[1]))
                    checked += len(py[:6]) + len(py[6]) + len(py[7])
print("checked", checked)
"""


@pytest.mark.parametrize("limit,threads", [(1, 2), (2, 3)])
def test_a_region_with_fewer_threads_than_torchs_runs_the_loop_as_the_python_loop(
        built, limit, threads):
    """A thread limit below torch's threads (OMP_THREAD_LIMIT) gives the loop's parallel region
    fewer threads than it planned its team for: each thread's chunk of grad_z keeps to its own
    rows and only the partials of dL/dW_h the region's threads wrote are summed, so the loop
    is still the Python loop's arithmetic (before, dL/dW_h took an unwritten partial, and
    with 2 threads for a plan of 3 their chunks overlapped), and neither loop takes oneDNN's
    products, which the limit makes wrong (float32: the Python loop's outputs were off by up
    to 94 % of their scale): float64 to ~1e-9 over 37 steps of 3 rows, float32 to 1e-4 of
    each tensor's scale over 21 steps of 6 rows (more than a chunk of dL/dW_h both), each
    split, for the normalizations with their own team work (layer, batch by columns,
    PowerNorm's running statistics)."""
    env = dict(os.environ, OMP_THREAD_LIMIT=str(limit))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", THREAD_LIMITED_LOOP, str(threads)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    word, count = res.stdout.split()[-2:]
    # 36 cases (3 splits x 2 dtypes x 3 normalizations x 2 input widths), each out, h, c,
    # dL/dx and more
    assert word == "checked" and int(count) >= 36 * 4, res.stdout
