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
        for rows, cols in ((40, 37), (33, 70), (64, 64), (7, 5)):
            if bits == 1:
                codes = torch.randint(0, 2, (rows, cols)).float() * 2 - 1
            else:
                codes = torch.randint(-1, 2, (rows, cols)).float()
            planes, scale = pack_matrix(codes, bits), torch.rand(rows) + 0.5
            for batch in (1, 8):
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
    assert "checked 32" in res.stdout


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
