"""Spectral norms and the lambda bounds of Proposition 1 / 2 (Hou et al., NeurIPS 2019)."""
import math

import pytest
import torch

from nq_plugin.diagnostics.bounds import gate_spectral_norms, lambdas, weight_norm_gate_factors


def test_lambdas_for_a_known_matrix():
    h = 3
    w = torch.cat([2 * torch.eye(h), 4 * torch.eye(h), 1 * torch.eye(h), 8 * torch.eye(h)])
    norms = gate_spectral_norms(w)
    assert norms == pytest.approx({"i": 2, "f": 4, "a": 1, "o": 8})
    lam = lambdas(norms, gamma1=0.5)
    assert lam["lambda2"] == pytest.approx(2 / 4 + 0.5 * 4 / 4 + 1)
    assert lam["lambda1"] == pytest.approx(lam["lambda2"] + 8 / 4)


@pytest.mark.parametrize("d", [4, 16, 64, 256])
def test_binary_matrices_have_spectral_norm_at_least_sqrt_d(d):
    torch.manual_seed(d)
    for _ in range(5):
        w = torch.randint(0, 2, (d, d)).float() * 2 - 1
        assert torch.linalg.matrix_norm(w, ord=2) >= math.sqrt(d) - 1e-4


def test_weight_norm_factor_is_scale_invariant():
    torch.manual_seed(0)
    w = torch.randint(0, 2, (4 * 8, 8)).float() * 2 - 1
    gain = torch.rand(32)
    a = weight_norm_gate_factors(w, gain)
    b = weight_norm_gate_factors(7.5 * w, gain)
    assert a == pytest.approx(b)
    # and it is g_* times the norm of the row-normalized block
    rows = w[:8] / w[:8].norm(dim=1, keepdim=True)
    assert a["i"] == pytest.approx(float(gain[:8].max() * torch.linalg.matrix_norm(rows, ord=2)))
