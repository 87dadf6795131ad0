"""The Triton kernel, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1 must be set
before triton compiles the kernel, so the checks run in a fresh interpreter process)."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install -e '.[gpu]')")

CHECK = textwrap.dedent("""
    import torch
    from nq_plugin.packed.format import pack_matrix
    from nq_plugin.packed.kernels.triton_kernels import packed_matmul
    torch.manual_seed(0)
    cases = 0
    for bits in (1, 2):
        for rows, cols in ((40, 37), (33, 70), (64, 64), (7, 5), (70, 200)):
            if bits == 1:
                codes = torch.randint(0, 2, (rows, cols)).float() * 2 - 1
            else:
                codes = torch.randint(-1, 2, (rows, cols)).float()
            planes, scale = pack_matrix(codes, bits), torch.rand(rows) + 0.5
            for batch in (1, 3, 8, 20):  # GEMV kernel up to 4 rows, tl.dot kernel above
                for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-2)):
                    x = torch.randn(batch, cols).to(dtype)
                    y = packed_matmul(x, planes, scale, bits, cols)
                    ref = x.float() @ (codes * scale[:, None]).t()
                    assert y.dtype == dtype and y.shape == (batch, rows)
                    err = (y.float() - ref).abs().max().item()
                    assert err <= tol * max(1.0, ref.abs().max().item()), (bits, rows, cols, batch, dtype, err)
                    cases += 1
    print("checked", cases)
""")


def test_kernel_matches_unpacked_reference_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "checked 80" in res.stdout


def test_missing_triton_falls_back_and_says_so_once(monkeypatch, caplog):
    import sys
    from nq_plugin.logs import LogOnce
    from nq_plugin.packed import kernels
    monkeypatch.setitem(sys.modules, "nq_plugin.packed.kernels.triton_kernels", None)
    monkeypatch.setattr(kernels, "_log_once", LogOnce(kernels.logger))
    with caplog.at_level("WARNING", logger="nq_plugin.packed.kernels"):
        assert kernels.triton_matmul() is None
        assert kernels.triton_matmul() is None
    messages = [r.message for r in caplog.records if "Triton kernel unavailable" in r.message]
    assert len(messages) == 1 and "exact PyTorch path" in messages[0]


FUSED_CHECK = textwrap.dedent("""
    import torch
    from nq_plugin.nn import NQLSTM
    from nq_plugin.packed import PackedNQLSTM, lstm as packed_lstm
    from nq_plugin.quant import attach_optimizer
    from nq_plugin.packed.kernels import triton_kernels
    packed_lstm.select_kernel = lambda *args: "triton"  # the GPU choice, on the interpreter
    # fewer, larger programs than on a GPU: the interpreter's cost is per program and operation
    triton_kernels.step_config = lambda hidden, ternary: {"BLOCK_J": 8, "BLOCK_W": 2,
                                                          "num_warps": 1}
    cases = 0
    for quantizer in ("bc", "twn"):  # 1 and 2 bits; scale folding of the rest: test_packed_lstm
        for norm, stats in (("none", "shared"), ("weight", "shared"), ("batch", "shared"),
                            ("batch", "separate"), ("power", "shared"), ("layer", "shared")):
            torch.manual_seed(0)
            m = NQLSTM(37, 24, 1, quantizer=quantizer, norm=norm, bn_stats=stats, bn_max_steps=3)
            opt = torch.optim.Adam(m.parameters(), 1e-2)
            attach_optimizer(m, opt)
            for _ in range(2):  # real running statistics and trained gains
                m(torch.randn(5, 4, 37))[0].pow(2).mean().backward()
                opt.step()
                opt.zero_grad()
            packed = PackedNQLSTM.from_lstm(m.eval())
            x = torch.randn(4, 3, 37)
            with torch.no_grad():
                for t0 in ((0, 2) if stats == "separate" else (0,)):  # slots 0..2, clamped
                    layer = packed.layers[0]
                    h, c = torch.randn(3, 24), torch.randn(3, 24)
                    fused = layer._fused_forward(x, h, c, t0)
                    if norm == "layer":  # not a per-feature affine map: the per-op path
                        assert fused is None
                        continue
                    out, (h2, c2) = fused
                    ref, (rh, rc) = m.layers[0](x, (h, c), t0=t0)
                    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
                    torch.testing.assert_close(c2, rc, atol=1e-5, rtol=0)
                    cases += 1
    print("checked", cases)
""")


@pytest.mark.slow
def test_fused_step_matches_the_unpacked_layer_under_interpreter():
    """The fused GPU step (both products from the words, the folded normalization, gates, cell)
    equals the unpacked layer for every quantizer x per-feature-affine normalization."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", FUSED_CHECK], capture_output=True, text=True,
                         env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "checked 12" in res.stdout
