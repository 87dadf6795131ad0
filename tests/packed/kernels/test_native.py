"""The native CPU kernel (computes x W^T from the packed words) against the unpacked weights,
the packed LSTM token by token against the unpacked model, and the kernel choice."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nq_plugin.packed.format import pack_matrix, unpack_matrix, word_planes
from nq_plugin import backend, native as loader
from nq_plugin.packed.kernels import PackedMatrix, native

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler: the native kernel cannot be built")


@pytest.fixture(scope="module")
def built():
    module = native.load()
    assert module is not None, f"native kernel did not build: {loader.build_error()}"
    return module


def cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return None


@pytest.fixture(params=["pairs", "triples", "nibbles", "wide"])
def lookup(request, built, backend_choice):
    """Each table lookup of the exact products that this CPU runs, chosen for the test."""
    if request.param == "triples" and not built.packed_triples_supported():
        pytest.skip("the extension is no AVX2 build: the triples lookup cannot run")
    if request.param in ("nibbles", "wide") and not built.packed_nibbles_supported():
        pytest.skip(f"this CPU (or build) has no AVX-512 F and VL: the {request.param} lookup "
                    "cannot run")
    backend_choice(lookup=request.param)
    return request.param


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("rows,cols", [(8, 5), (64, 53), (40, 96), (3, 32), (2048, 512)])
def test_native_decode_equals_the_pytorch_decode(built, bits, rows, cols, backend_choice):
    """The dense diag(s) B that batches above the GEMV's rows multiply with: decoded natively
    (one pass over the words) it is bit-identical to PyTorch's table decode."""
    torch.manual_seed(rows * cols)
    codes = torch.randint(-1, 2, (rows, cols)).float()
    if bits == 1:
        codes = torch.where(codes >= 0, 1.0, -1.0)
    planes, scale = pack_matrix(codes, bits), torch.rand(rows) + 0.1
    assert torch.equal(native.unpack(planes, bits, cols), codes)
    decoded = native.unpack(planes, bits, cols, scale)
    assert torch.equal(decoded, unpack_matrix(planes, bits, cols) * scale[:, None])
    assert torch.equal(PackedMatrix(planes, scale, bits, cols).unpacked(), decoded)
    backend_choice(packed_kernel="torch")  # the exact PyTorch path, as chosen
    assert native.unpack(planes, bits, cols, scale) is None
    assert torch.equal(PackedMatrix(planes, scale, bits, cols).unpacked(), decoded)


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("rows,cols", [(8, 5), (64, 53), (40, 96), (2048, 512), (37, 300)])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_kernel_equals_unpacked_product(built, bits, rows, cols, batch, two_threads, lookup):
    """Every shape the lookup kernel treats apart: fewer than 8 words (zero-padded lanes), a
    multiple of 8, more than 8 and not a multiple (the last block overlaps the one before),
    rows not a multiple of 8 (the last block's lanes repeat the last row), inputs not a
    multiple of the table's group (2 or 4); on two threads (the rows split between them); with
    each lookup."""
    torch.manual_seed(rows + cols + batch)
    codes = torch.randint(-1, 2, (rows, cols)).float()
    if bits == 1:
        codes = torch.where(codes >= 0, 1.0, -1.0)
    planes = pack_matrix(codes, bits)
    scale = torch.rand(rows) + 0.1
    x = torch.randn(batch, cols)
    m = PackedMatrix(planes, scale, bits, cols)
    ref = x.double() @ (unpack_matrix(planes, bits, cols).double() * scale.double()[:, None]).t()
    bound = 1e-6 * float(ref.abs().max()) + 1e-6  # fp32 summation over the row, as a GEMM's
    for got in (native.packed_gemv(x, planes, scale, bits, cols), m.matmul(x)):
        assert float((got.double() - ref).abs().max()) <= bound


@pytest.mark.parametrize("bits_x,bits_h", [(1, 1), (2, 2), (1, 2)])
@pytest.mark.parametrize("inputs,hidden,batch", [(27, 13, 1), (5, 300, 3), (53, 512, 2)])
@pytest.mark.parametrize("layer_norm", ["", "h", "xh"])
def test_fused_step_equals_the_step_in_fp64(built, bits_x, bits_h, inputs, hidden, batch,
        layer_norm, two_threads, lookup):
    """packed_lstm_step (both products from the words, the folded coefficients, the gates and
    the cell in blocks of 8 hidden units) against the same step in fp64: hidden sizes that are
    not a multiple of 8, words below, at and above 8, binary and ternary in one step, and
    layer-normalized terms (standardized per gate block after a per-row scale); with each
    lookup."""
    torch.manual_seed(inputs + hidden + batch)

    def matrix(bits, cols):
        codes = torch.randint(-1, 2, (4 * hidden, cols)).double()
        if bits == 1:
            codes = torch.where(codes >= 0, 1.0, -1.0).double()
        return pack_matrix(codes.float(), bits), codes

    (ih, bx), (hh, bh) = matrix(bits_x, inputs), matrix(bits_h, hidden)
    x, h, c = torch.randn(batch, inputs), torch.randn(batch, hidden), torch.randn(batch, hidden)
    ax, ah = torch.rand(4 * hidden) * 0.2, torch.rand(4 * hidden) * 0.1
    shift = torch.randn(4 * hidden)
    scale_x, scale_h = torch.rand(4 * hidden) + 0.5, torch.rand(4 * hidden) + 0.5
    eps = 1e-5
    ln = {t: (scale, eps) if t in layer_norm else None
          for t, scale in (("x", scale_x), ("h", scale_h))}
    step = native.lstm_stepper((ih, bits_x), (hh, bits_h), ln["x"], ln["h"])
    h2, c2 = step(x, h, c, ax, ah, shift)

    def term(t, y, codes, scale):
        y = y.double() @ codes.t()
        if ln[t] is None:
            return y
        blocks = (scale.double() * y).reshape(batch, 4, hidden)
        mean = blocks.mean(-1, keepdim=True)
        var = blocks.var(-1, unbiased=False, keepdim=True)
        return ((blocks - mean) / (var + eps).sqrt()).reshape(batch, 4 * hidden)

    g = ax.double() * term("x", x, bx, scale_x) + ah.double() * term("h", h, bh, scale_h) + \
        shift.double()
    i, f, a, o = g.chunk(4, dim=1)
    c_ref = f.sigmoid() * c.double() + i.sigmoid() * a.tanh()
    h_ref = o.sigmoid() * c_ref.tanh()
    torch.testing.assert_close(c2.double(), c_ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(h2.double(), h_ref, atol=2e-5, rtol=1e-5)
    out = torch.empty(batch, hidden)
    step(x.half(), h.half(), c.half(), ax, ah, shift, h_out=out)  # other dtypes: converted
    torch.testing.assert_close(out.double(), h_ref, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("hidden", [13, 16, 300])
def test_lane_layout_is_the_planes_rearranged(built, bits, hidden, lookup):
    """The fused step's lane layout holds word q of each gate block's row l at [k, q, l] (adds
    and subtracts split, a gate's missing rows repeating its last row), and the step read from
    it equals the step read from the planes bit for bit (the same sums in the same order)."""
    torch.manual_seed(hidden + bits)
    rows, cols = 4 * hidden, 70
    codes = torch.randint(-1, 2, (rows, cols)).float()
    if bits == 1:
        codes = torch.where(codes >= 0, 1.0, -1.0)
    planes = pack_matrix(codes, bits)
    add, sub = native.lane_layout(planes, bits, hidden)
    blocks = -(-hidden // 8)
    assert add.shape == (4 * blocks, 3, 8) and add.dtype == torch.int32
    assert (sub is None) == (bits == 1)
    first, neg = word_planes(planes, bits)
    want_add = first if neg is None else first & ~neg
    for k in range(4 * blocks):
        for l in range(8):
            g, j = divmod(k, blocks)
            r = g * hidden + min(j * 8 + l, hidden - 1)
            assert torch.equal(add[k, :, l], want_add[r])
            if neg is not None:
                assert torch.equal(sub[k, :, l], (first & neg)[r])
    with pytest.raises(ValueError, match="not segments of 7"):
        native.lane_layout(planes, bits, 7)

    hh = pack_matrix(torch.where(torch.randn(rows, hidden) > 0, 1.0, -1.0), 1)
    x, h, c = torch.randn(2, cols), torch.randn(2, hidden), torch.randn(2, hidden)
    ax, ah, shift = torch.rand(rows), torch.rand(rows), torch.randn(rows)
    m = built.PackedStepOperands()
    m.lookup = native.LOOKUP_NUMBERS[lookup]  # the planes' lookups (triples: the pairs)
    m.ih_plus, m.ih_neg = first, neg
    m.hh_plus, m.hh_neg = word_planes(hh, 1)
    from_planes = built.packed_lstm_step(x, h, c, ax, ah, shift, m)
    m.ih_lane_add, m.ih_lane_sub = add, sub
    m.hh_lane_add, m.hh_lane_sub = native.lane_layout(hh, 1, hidden)
    from_lanes = built.packed_lstm_step(x, h, c, ax, ah, shift, m)
    for a, b in zip(from_planes, from_lanes):
        assert torch.equal(a, b)
    m.ih_lane_add = add[:-1].contiguous()  # a block short: refused, not read out of bounds
    with pytest.raises(RuntimeError, match="lane layout"):
        built.packed_lstm_step(x, h, c, ax, ah, shift, m)


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("hidden,cols", [(5, 61), (13, 30), (16, 300)])
def test_triples_layout_is_the_codes_rearranged(built, bits, hidden, cols, backend_choice):
    """The triples layout holds, for block k's row l, group i of word q -- inputs 30 q + 3 i +
    d, d = 0, 1, 2 at the code's bit d -- at bits 3 i (i < 5) or 16 + 3 (i - 5) of [k, q, l]:
    the adds' code (binary: bit set for +1; ternary: for +1) and, ternary, the subtracts' (for
    -1); inputs past the matrix 0, a gate's missing rows repeating its last. The fused step
    reads both matrices from theirs under the triples lookup (only there) and refuses a
    missing or short layout."""
    if not built.packed_triples_supported():
        pytest.skip("the extension is no AVX2 build: the triples lookup cannot run")
    torch.manual_seed(hidden + bits + cols)
    rows = 4 * hidden
    codes = torch.randint(-1, 2, (rows, cols))
    if bits == 1:
        codes = torch.where(codes >= 0, 1, -1)
    planes = pack_matrix(codes.float(), bits)
    add, sub = native.triples_layout(planes, bits, hidden, cols)
    blocks, words = -(-hidden // 8), -(-cols // 30)
    assert add.shape == (4 * blocks, words, 8) and add.dtype == torch.int32
    assert (sub is None) == (bits == 1)
    for k in range(4 * blocks):
        for l in range(8):
            g, j = divmod(k, blocks)
            r = g * hidden + min(j * 8 + l, hidden - 1)
            for col in range(words * 30):
                q, i, d = col // 30, (col % 30) // 3, col % 3
                bit = (3 * i if i < 5 else 16 + 3 * (i - 5)) + d
                w = int(codes[r, col]) if col < cols else 0
                assert (int(add[k, q, l]) >> bit) & 1 == (w > 0)
                if sub is not None:
                    assert (int(sub[k, q, l]) >> bit) & 1 == (w < 0)
    with pytest.raises(ValueError, match="not segments of 7"):
        native.triples_layout(planes, bits, 7)

    hh = (pack_matrix(codes[:, :hidden].float() if cols >= hidden else
                      torch.ones(rows, hidden), bits), bits)
    ih = (planes, bits)
    for lookup, expected in (("triples", 2), ("pairs", 0)):
        backend_choice(lookup=lookup)
        step = native.lstm_stepper(ih, hh)
        operands = step.operands
        assert operands.lookup == expected
        assert operands.hh_lane_add.shape[1] == (-(-hidden // 30) if expected else
                                                 -(-hidden // 32))
    x, h, c = torch.randn(1, cols), torch.randn(1, hidden), torch.randn(1, hidden)
    args = (torch.ones(rows), torch.ones(rows), torch.zeros(rows))
    operands.lookup = 2  # the pairs' lane layout where the triples' is due: refused
    lane = operands.hh_lane_add
    operands.hh_lane_add = None
    with pytest.raises(RuntimeError, match="triples layout"):
        built.packed_lstm_step(x, h, c, *args, operands)
    operands.hh_lane_add = lane[:, :0].contiguous()
    with pytest.raises(RuntimeError, match="triples layout"):
        built.packed_lstm_step(x, h, c, *args, operands)


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("hidden", [5, 32, 45])
def test_wide_layout_is_the_codes_rearranged(built, bits, hidden, backend_choice):
    """The wide layout holds, for row g H + 32 k + l, group 4 q + i's code at
    [k, q, 4 (32 g + l) + i] -- ternary: 3 inputs in base 3 (digits 0, +1 -> 1, -1 -> 2);
    binary: 5 inputs' sign bits, input 5j + i at bit i; inputs past the matrix and rows past H:
    0 --; the fused step reads W_h and W_x from theirs under the wide lookup (only there: the
    nibbles lookup leaves them unset) and refuses a layout of the wrong shape."""
    if not built.packed_wide_supported():
        pytest.skip("this CPU (or build) has no AVX-512 F: the wide lookup cannot run")
    torch.manual_seed(hidden + bits)
    rows, size = 4 * hidden, 3 if bits == 2 else 5
    codes = torch.randint(-1, 2, (rows, hidden))
    if bits == 1:
        codes = torch.where(codes >= 0, 1, -1)
    layout = native.wide_layout(pack_matrix(codes.float(), bits), bits, hidden)
    blocks, quads = -(-hidden // 32), -(-hidden // (4 * size))
    assert layout.shape == (blocks, quads, 512) and layout.dtype == torch.uint8
    digit = {0: 0, 1: 1, -1: 2} if bits == 2 else {1: 1, -1: 0}
    place = [9, 3, 1] if bits == 2 else [1, 2, 4, 8, 16]
    for r in range(0, rows, 7):
        g, u = divmod(r, hidden)
        k, l = divmod(u, 32)
        for j in range(4 * quads):
            want = sum(place[i] * digit[int(codes[r, size * j + i])]
                       for i in range(size) if size * j + i < hidden)
            q, i = divmod(j, 4)
            assert int(layout[k, q, 4 * (32 * g + l) + i]) == want
    if hidden % 32:  # the last block's missing units are zero codes
        assert int(layout[-1, :, 4 * (hidden % 32):128].sum()) == 0
    hh = (pack_matrix(codes.float(), bits), bits)
    ih = (pack_matrix(torch.ones(rows, 3), 1), 1)
    for lookup, expected in (("wide", True), ("nibbles", False)):
        backend_choice(lookup=lookup)
        step = native.lstm_stepper(ih, hh)
        operands = step.operands
        assert (operands.hh_wide is not None) == expected
        assert (operands.ih_wide is not None) == expected  # W_x too (its words' columns)
    operands.hh_wide = layout[:, :-1].contiguous() if quads > 1 else layout[:-1].contiguous()
    with pytest.raises(RuntimeError, match="wide layout"):
        step(torch.ones(1, 3), torch.ones(1, hidden), torch.ones(1, hidden), torch.ones(rows),
             torch.ones(rows), torch.zeros(rows))


def test_the_lookup_is_chosen_at_run_time_by_the_cpu(built, backend_choice, monkeypatch):
    """auto takes the wide lookup (and its nibbles) exactly where the CPU has AVX-512 F and VL
    (read from /proc/cpuinfo, independently of the extension's own check), else the triples
    where the build has AVX2; pairs runs everywhere; nibbles or wide forced where they cannot
    run, triples without AVX2, or a bad lookup number, is an error naming the fix."""
    flags = cpu_flags()
    supported = built.packed_nibbles_supported()
    if flags is not None and backend.native_march() == "native":
        assert supported == ("avx512f" in flags and "avx512vl" in flags)
        assert built.packed_wide_supported() == ("avx512f" in flags)
        assert built.packed_triples_supported() == ("avx2" in flags)
    speedup = built.packed_triples_speedup()
    assert (speedup > 0) == built.packed_triples_supported() and speedup < float("inf")
    measured = "triples" if native.triples_speedup() >= native.TRIPLES_MARGIN else "pairs"
    assert native.lookup_choice() == ("wide" if supported else measured)
    for forced in ("pairs", "triples"):
        backend_choice(lookup=forced)
        assert native.lookup_choice() == forced
    planes, scale = pack_matrix(torch.ones(8, 40), 2), torch.ones(8)
    with pytest.raises(RuntimeError, match="0 \\(pairs\\), 1 \\(nibbles\\) or 2"):
        built.packed_gemv(torch.ones(1, 40), *word_planes(planes, 2), scale, 40, 7)
    with pytest.raises(RuntimeError, match="packed_gemv reads the planes"):
        built.packed_gemv(torch.ones(1, 40), *word_planes(planes, 2), scale, 40, 2)

    class Without:
        triples = True
        speedup = 1.7  # the triples' measured speed over the pairs' (Zen 4's AVX2)

        def packed_triples_speedup(self):
            return self.speedup if self.triples else 0.0

        def packed_nibbles_supported(self):
            return False

        def packed_wide_supported(self):
            return False

        def packed_triples_supported(self):
            return self.triples
    without = Without()
    monkeypatch.setattr(native, "load", lambda: without)
    native.triples_speedup.cache_clear()  # measured once a process: again for each CPU here
    backend_choice(lookup="auto")
    assert native.lookup_choice() == "triples"
    without.speedup = 0.7  # Zen 3: vpermps across lanes slower than the pairs' vpermilps
    native.triples_speedup.cache_clear()
    assert native.lookup_choice() == "pairs"
    backend_choice(lookup="triples")  # forced, the triples run where measured slower
    assert native.lookup_choice() == "triples"
    without.speedup = 1.05  # a close call (within TRIPLES_MARGIN) stays with the pairs
    native.triples_speedup.cache_clear()
    backend_choice(lookup="auto")
    assert native.lookup_choice() == "pairs"
    for forced in ("nibbles", "wide"):
        backend_choice(lookup=forced)
        with pytest.raises(RuntimeError,
                           match=f"NQ_PLUGIN_LOOKUP={forced}.*no AVX-512.*triples, pairs or auto"):
            native.lookup_choice()
    without.triples = False  # a build without AVX2 (not x86)
    native.triples_speedup.cache_clear()
    backend_choice(lookup="auto")
    assert native.lookup_choice() == "pairs"
    backend_choice(lookup="triples")
    with pytest.raises(RuntimeError, match="NQ_PLUGIN_LOOKUP=triples.*no AVX2.*pairs or auto"):
        native.lookup_choice()
    native.triples_speedup.cache_clear()  # the next test measures this CPU again


@pytest.mark.parametrize("quantizer", ["bc", "tc", "bwn", "twn", "fp"])
@pytest.mark.parametrize("norm,stats", [("none", "shared"), ("weight", "shared"),
                                        ("layer", "shared"), ("batch", "separate"),
                                        ("power", "shared")])
def test_token_by_token_packed_equals_unpacked(built, quantizer, norm, stats):
    from tests.packed.test_packed_lstm import trained
    from nq_plugin.packed import PackedNQLSTM
    m = trained(quantizer, norm, stats)
    packed = PackedNQLSTM.from_lstm(m)
    state = None
    with torch.no_grad():
        for t in range(12):  # beyond T_max = 5 of the per-step statistics
            x = torch.randn(1, 1, 37)
            # both from the same state: the unnormalized binary LSTM amplifies any rounding
            # difference ~2.5x per step (the paper's point), so compare each step's computation
            b, sb = packed(x, state, t0=t)
            a, state = m(x, state, t0=t)
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(sb[1], state[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("quantizer,norm", [("bc", "weight"), ("tc", "layer"),
                                            ("twn", "batch")])
def test_a_one_layer_models_token_step_is_one_native_call(built, quantizer, norm, monkeypatch):
    """A one-layer packed model's generation step (T=1, float32, CPU) is the native step's
    token call in the model's shapes: the same numbers as the layer's own step, the output a
    tensor of its own; other dtypes go the layer's way."""
    from nq_plugin.packed import PackedNQLSTM
    from nq_plugin.nn import NQLSTM
    from nq_plugin.packed.lstm import PackedNQLSTMLayer
    torch.manual_seed(0)
    m = NQLSTM(37, 40, quantizer=quantizer, norm=norm, bn_stats="separate",
               bn_max_steps=5).eval()
    packed = PackedNQLSTM.from_lstm(m).eval()
    layer = packed.layers[0]
    layer_calls = []
    forward = PackedNQLSTMLayer.forward
    monkeypatch.setattr(PackedNQLSTMLayer, "forward",
                        lambda self, *a, **k: layer_calls.append(1) or forward(self, *a, **k))
    state = None
    with torch.no_grad():
        for t in range(7):  # beyond T_max = 5 of the per-step statistics
            x = torch.randn(1, 3, 37)
            out, new = packed(x, state, t0=t)
            assert not layer_calls  # the token call, not the layer's forward
            assert out.shape == new[0].shape == new[1].shape == (1, 3, 40)
            ref_out, (h, c) = forward(layer, x, None if state is None else
                                      (state[0][0], state[1][0]), t)
            torch.testing.assert_close(out, ref_out, atol=0, rtol=0)
            torch.testing.assert_close(new[0][0], h, atol=0, rtol=0)
            torch.testing.assert_close(new[1][0], c, atol=0, rtol=0)
            unpacked, _ = m(x, state, t0=t)
            torch.testing.assert_close(out, unpacked, atol=1e-5, rtol=1e-5)
            out.zero_()  # the output is not the state
            assert new[0].abs().sum() > 0
            state = new
        out64, _ = packed(x.double(), tuple(s.double() for s in state), t0=7)
    assert layer_calls and out64.dtype == torch.float64


def test_step_layouts_are_copied_onto_huge_pages(built, backend_choice):
    """What every step reads whole is copied once into memory of its own, 2 MiB-aligned (so
    that transparent huge pages can back it) where it spans a huge page; the copy equals it."""
    import sys
    big = torch.randint(0, 255, (3, 1 << 20), dtype=torch.uint8)
    small = torch.randn(5, 7)
    for t in (big, small, big[:, ::2]):
        copy = built.huge_page_copy(t)
        assert torch.equal(copy, t) and copy.is_contiguous()
        assert copy.data_ptr() != t.data_ptr()
    if sys.platform.startswith("linux"):
        assert built.huge_page_copy(big).data_ptr() % (2 << 20) == 0
    backend_choice(lookup="wide" if built.packed_wide_supported() else "pairs")
    hh = (pack_matrix(torch.randint(-1, 2, (4 * 1300, 1300)).float(), 2), 2)  # 2.3 MB wide
    ih = (pack_matrix(torch.ones(4 * 1300, 3), 1), 1)
    m = native.lstm_stepper(ih, hh).operands
    layout = m.hh_wide if m.hh_wide is not None else m.hh_lane_add
    if sys.platform.startswith("linux") and layout.numel() >= 2 << 20:
        assert layout.data_ptr() % (2 << 20) == 0
    assert layout.numel() >= 2 << 20 or m.hh_wide is None


def test_kernel_choice_is_explicit(built, backend_choice):
    backend_choice(packed_kernel="torch")
    assert not native.use_native(1)
    backend_choice(packed_kernel="auto")
    assert native.use_native(1) and not native.use_native(native.MAX_NATIVE_BATCH + 1)
    backend_choice(packed_kernel="native")
    assert native.use_native(1000)
    backend_choice(packed_kernel="triton")  # a GPU choice: CPU products use PyTorch
    assert not native.use_native(1)
    with pytest.raises(ValueError, match="auto, native, triton or torch"):
        backend_choice(packed_kernel="fastest")
    from nq_plugin.backend import Backend
    with pytest.raises(ValueError, match="NQ_PLUGIN_KERNEL='fastest'"):
        Backend.from_environ({"NQ_PLUGIN_KERNEL": "fastest"})


def test_a_failed_build_falls_back_in_auto_and_fails_loudly_when_forced(monkeypatch,
        backend_choice):
    monkeypatch.setattr(loader, "_module", None)
    monkeypatch.setattr(loader, "_failed", "simulated: no compiler")
    backend_choice(packed_kernel="auto")
    assert not native.use_native(1)
    m = PackedMatrix(pack_matrix(torch.ones(4, 8), 1), torch.ones(4), 1, 8)
    torch.testing.assert_close(m.matmul(torch.ones(1, 8)), torch.full((1, 4), 8.0))
    backend_choice(packed_kernel="native")
    with pytest.raises(RuntimeError, match="failed to build"):
        native.use_native(1)


AVX2_CHECK = """
import torch
from nq_plugin import native as loader
from nq_plugin.packed.format import pack_matrix, word_planes
from nq_plugin.packed.kernels import native
m = native.load()
assert m is not None, loader.build_error()
assert m.__name__.endswith("x86_64_v3"), m.__name__
from nq_plugin import backend
print(m.packed_wide_supported(), m.packed_nibbles_supported(), native.lookup_choice(),
      native.triples_speedup())
g = torch.Generator().manual_seed(0)
w, x = torch.randn(64, 300, generator=g), torch.randn(2, 300, generator=g)
for bits in (1, 2):
    planes = pack_matrix(w, bits)
    torch.save(m.packed_gemv(x, *word_planes(planes, bits), torch.ones(64), 300, 0),
               f"{OUT}/avx2_{bits}.pt")
    # the fused step by the triples (auto's choice where they measure faster), W_x and W_h
    # both of `bits` bits
    wx, wh = torch.randn(4 * 75, 53, generator=g), torch.randn(4 * 75, 75, generator=g)
    with backend.use(lookup="triples"):
        step = native.lstm_stepper((pack_matrix(wx, bits), bits), (pack_matrix(wh, bits), bits))
    assert step.operands.lookup == 2
    xs, h, c = torch.randn(2, 53, generator=g), torch.randn(2, 75, generator=g), torch.randn(2, 75, generator=g)
    torch.save(step(xs, h, c, torch.full((300,), 0.1), torch.full((300,), 0.1), torch.zeros(300)),
               f"{OUT}/avx2_step_{bits}.pt")
"""


@pytest.mark.slow
def test_the_avx2_only_build_is_a_module_of_its_own(built, tmp_path, monkeypatch):
    """NQ_PLUGIN_MARCH=x86-64-v3 builds a second module (AVX2 and FMA, no AVX-512) that reports
    the AVX-512 lookups unsupported, as an AVX2-only CPU would, so auto takes the triples where
    they measure faster than the pairs here, else the pairs; its products are the native build's
    pairs products, and its fused steps by the triples the same step in fp64. Any other target
    is an error."""
    env = dict(os.environ, NQ_PLUGIN_MARCH="x86-64-v3")
    res = subprocess.run([sys.executable, "-c", f"OUT = {str(tmp_path)!r}\n" + AVX2_CHECK],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    wide, nibbles, choice, speedup = res.stdout.split()[-4:]
    assert (wide, nibbles) == ("False", "False") and float(speedup) > 0
    assert choice == ("triples" if float(speedup) >= native.TRIPLES_MARGIN else "pairs")
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(64, 300, generator=g), torch.randn(2, 300, generator=g)
    for bits in (1, 2):
        planes = pack_matrix(w, bits)
        ours = built.packed_gemv(x, *word_planes(planes, bits), torch.ones(64), 300, 0)
        torch.testing.assert_close(torch.load(tmp_path / f"avx2_{bits}.pt"), ours)
        wx, wh = torch.randn(4 * 75, 53, generator=g), torch.randn(4 * 75, 75, generator=g)
        xs, h, c = torch.randn(2, 53, generator=g), torch.randn(2, 75, generator=g), \
            torch.randn(2, 75, generator=g)

        def codes(w):
            return unpack_matrix(pack_matrix(w, bits), bits, w.shape[1]).double()
        gates = 0.1 * (xs.double() @ codes(wx).t() + h.double() @ codes(wh).t())
        i, f, a, o = gates.chunk(4, dim=1)
        c_ref = f.sigmoid() * c.double() + i.sigmoid() * a.tanh()
        h_ref = o.sigmoid() * c_ref.tanh()
        h2, c2 = torch.load(tmp_path / f"avx2_step_{bits}.pt")
        torch.testing.assert_close(h2.double(), h_ref, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(c2.double(), c_ref, atol=2e-5, rtol=1e-5)
    monkeypatch.setenv("NQ_PLUGIN_MARCH", "skylake")
    with pytest.raises(ValueError, match="NQ_PLUGIN_MARCH='skylake': use native or x86-64-v3"):
        backend.native_march()


def quantized(x):
    """The int8-activation mode's quantization of each row: s * q, q = round(x / s) in
    [-127, 127], s = max|x| / 127 (csrc/q8_lookup.h)."""
    s = x.abs().amax(-1, keepdim=True) / 127
    q = torch.clamp(torch.round(x / torch.where(s > 0, s, 1)), -127, 127)
    return s, q


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("rows,cols,batch", [(8000, 2000, 1), (100, 53, 3), (40, 300, 8),
                                             (32, 32, 1), (37, 5, 2)])
def test_int8_activation_product_is_exact_in_integers(built, bits, rows, cols, batch):
    """packed_gemv_q8: the vpshufb tables over groups of 4 inputs, int16 sums widened every 60
    groups, the nibble layout's row blocks of 32 and padding -- equal to s * (B q) computed in
    fp64 up to the final fp32 product, and within the quantization's own bound of x W^T:
    |B (x - s q)| <= s / 2 * (number of nonzero codes in the row)."""
    torch.manual_seed(rows + cols + batch)
    codes = torch.randint(-1, 2, (rows, cols)).float()
    if bits == 1:
        codes = torch.where(codes >= 0, 1.0, -1.0)
    scale = torch.rand(rows) + 0.5
    x = torch.randn(batch, cols)
    x[0, 0] = 40.0  # large activations: the int16 sums' range
    y = native.packed_gemv_q8(x, native.q8_layout(pack_matrix(codes, bits), bits), scale, rows,
                              cols)
    s, q = quantized(x)
    ref = (q.double() @ codes.double().t()) * s.double() * scale.double()
    torch.testing.assert_close(y.double(), ref, atol=1e-6 * ref.abs().max().item(), rtol=1e-6)
    exact = (x.double() @ codes.double().t()) * scale.double()
    bound = s.double() / 2 * codes.abs().sum(1).double() * scale.double()
    assert ((y.double() - exact).abs() <= bound * (1 + 1e-5) + 1e-4).all()
    zero = native.packed_gemv_q8(torch.zeros(1, cols), native.q8_layout(
        pack_matrix(codes, bits), bits), scale, rows, cols)
    assert torch.equal(zero, torch.zeros(1, rows))  # s = 0: no division by zero


@pytest.mark.parametrize("bits_h", [1, 2])
@pytest.mark.parametrize("hidden,batch", [(13, 1), (300, 3), (512, 2)])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_int8_step_is_the_step_with_quantized_h(built, bits_h, hidden, batch, layer_norm):
    """The fused step with NQ_PLUGIN_ACTIVATIONS=int8's recurrent product equals the fp64 step
    whose h term uses s * q (the input term stays exact), layer norm on h included."""
    torch.manual_seed(hidden + batch)
    inputs = 27
    codes_x = torch.randint(-1, 2, (4 * hidden, inputs)).float()
    codes_h = torch.randint(-1, 2, (4 * hidden, hidden)).float()
    if bits_h == 1:
        codes_h = torch.where(codes_h >= 0, 1.0, -1.0)
    ih, hh = pack_matrix(codes_x, 2), pack_matrix(codes_h, bits_h)
    x, h, c = torch.randn(batch, inputs), torch.rand(batch, hidden) * 2 - 1, torch.randn(batch,
                                                                                         hidden)
    ax, ah = torch.rand(4 * hidden) * 0.2, torch.rand(4 * hidden) * 0.1
    shift, scale_h, eps = torch.randn(4 * hidden), torch.rand(4 * hidden) + 0.5, 1e-5
    ln_h = (scale_h, eps) if layer_norm else None
    step = native.lstm_stepper((ih, 2), (hh, bits_h), None, ln_h, native.q8_layout(hh, bits_h))
    h2, c2 = step(x, h, c, ax, ah, shift)
    s, q = quantized(h)
    y = (s * q).double() @ codes_h.double().t()
    if layer_norm:
        blocks = (scale_h.double() * y).reshape(batch, 4, hidden)
        y = ((blocks - blocks.mean(-1, keepdim=True)) /
             (blocks.var(-1, unbiased=False, keepdim=True) + eps).sqrt()).reshape(batch, -1)
    g = ax.double() * (x.double() @ codes_x.double().t()) + ah.double() * y + shift.double()
    i, f, a, o = g.chunk(4, dim=1)
    c_ref = f.sigmoid() * c.double() + i.sigmoid() * a.tanh()
    torch.testing.assert_close(c2.double(), c_ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(h2.double(), o.sigmoid() * c_ref.tanh(), atol=2e-5, rtol=1e-5)


def test_activation_mode_is_explicit_and_switches_the_kept_plan(built, backend_choice):
    """NQ_PLUGIN_ACTIVATIONS: fp32 (default, exact) or int8 (close, not equal); anything else is
    an error naming both; the layer's kept plan follows the setting."""
    from tests.packed.test_packed_lstm import trained
    from nq_plugin.packed import PackedNQLSTM
    m = trained("tc", "weight", "shared")
    packed = PackedNQLSTM.from_lstm(m)
    state, differs = None, []
    with torch.no_grad():
        for _ in range(4):  # from the second step on h != 0
            x = torch.randn(1, 1, 37)
            backend_choice(activations="int8")
            fast, _ = packed(x, state)
            backend_choice(activations="fp32")
            again, _ = packed(x, state)
            exact, state = m(x, state)
            torch.testing.assert_close(again, exact, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast, exact, atol=2e-2, rtol=0)
            differs.append(not torch.equal(fast, again))
    assert differs[1:] == [True] * 3
    import copy
    chosen = copy.deepcopy(packed).set_activations("int8")  # the per-model setting wins
    with torch.no_grad():
        backend_choice(activations="int8")
        by_env, _ = packed(x, state)
        backend_choice(activations="fp32")
        by_attribute, _ = chosen(x, state)
    assert torch.equal(by_env, by_attribute)
    with pytest.raises(ValueError, match="activations='int4'"):
        chosen.set_activations("int4")
    with pytest.raises(ValueError, match="fp32.*int8"):
        backend_choice(activations="int4")
    from nq_plugin.backend import Backend
    with pytest.raises(ValueError, match="NQ_PLUGIN_ACTIVATIONS='int4': use fp32 or int8"):
        Backend.from_environ({"NQ_PLUGIN_ACTIVATIONS": "int4"})
