"""Spectral norms and the lambda bounds of Proposition 1 / 2 (Hou et al., NeurIPS 2019)."""
import math

import pytest
import torch

from nq_plugin.norm.bounds import gate_spectral_norms, lambdas, weight_norm_gate_factors


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


def _gate_matrix(scales, h=2):
    """A (4h x h) recurrent matrix whose gate blocks are scale * I (spectral norm = scale)."""
    return torch.cat([s * torch.eye(h) for s in scales])


def test_layer_norm_factors_and_bound_by_hand():
    """Proposition 3: ||W_h*||_2 -> (g_* / sigma_*) ||W_h*||_2, then Proposition 1's lambdas."""
    from nq_plugin.norm import build_normalization
    from nq_plugin.norm.bounds import lambdas
    norm = build_normalization("layer", 8)
    with torch.no_grad():
        norm.gain.copy_(torch.tensor([1.0, -2.0, 3.0, 1.0, 0.5, 0.25, 4.0, 1.0]))
    w = _gate_matrix([1.0, 2.0, 3.0, 4.0])
    factors = norm.gate_bound_factors(w, gate_spectral_norms(w), [0.5, 1.0, 2.0, 4.0])
    # i: max|g| = 2, sigma 0.5, norm 1 -> 4; f: 3 / 1 * 2 = 6; a: 0.5 / 2 * 3 = 0.75;
    # o: 4 / 4 * 4 = 4
    assert factors == pytest.approx({"i": 4.0, "f": 6.0, "a": 0.75, "o": 4.0})
    lam = lambdas(factors, gamma1=2.0, squared=norm.bound_on_squares)
    assert lam["lambda2"] == pytest.approx(4 / 4 + 2.0 * 6 / 4 + 0.75)  # 4.75
    assert lam["lambda1"] == pytest.approx(4.75 + 4 / 4)


def test_batch_norm_factors_and_squared_bound_by_hand():
    """Proposition 4: max_j (g_j / sigma_j) ||W_h*||_2 with the running variance, and the bound
    on squared norms: lambda_2^2 = f_i^2/2 + gamma_1^2 f_f^2/2 + 8 f_a^2, lambda_1^2 =
    lambda_2^2 + f_o^2/4."""
    from nq_plugin.norm import build_normalization
    from nq_plugin.norm.bounds import lambdas
    norm = build_normalization("batch", 8, bn_stats="separate", bn_max_steps=2)
    eps = norm.eps
    with torch.no_grad():
        norm.gain.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))
        norm.running_var.copy_(torch.tensor([[1.0] * 8, [3.0] * 8]))  # mean over steps: 2
    w = _gate_matrix([1.0, 1.0, 2.0, 0.5])
    factors = norm.gate_bound_factors(w, gate_spectral_norms(w), [9.9] * 4)  # sigmas unused
    s = math.sqrt(2.0 + eps)
    expected = {"i": 0.2 / s, "f": 0.4 / s, "a": 0.6 / s * 2.0, "o": 0.8 / s * 0.5}
    assert factors == pytest.approx(expected)
    assert norm.bound_on_squares
    lam = lambdas(factors, gamma1=3.0, squared=True)
    lam2 = expected["i"] ** 2 / 2 + 9.0 * expected["f"] ** 2 / 2 + 8 * expected["a"] ** 2
    assert lam["lambda2"] == pytest.approx(math.sqrt(lam2))
    assert lam["lambda1"] == pytest.approx(math.sqrt(lam2 + expected["o"] ** 2 / 4))


def test_power_norm_uses_its_running_quadratic_mean():
    from nq_plugin.norm import build_normalization
    norm = build_normalization("power", 8, bn_gain=1.0)
    with torch.no_grad():
        norm.running_phi.fill_(4.0)
    w = _gate_matrix([1.0, 2.0, 3.0, 4.0])
    factors = norm.gate_bound_factors(w, gate_spectral_norms(w), [1.0] * 4)
    psi = math.sqrt(4.0 + norm.eps)
    assert factors == pytest.approx({g: k / psi for g, k in zip("ifao", [1, 2, 3, 4])})
