"""The gradient bound of Hou et al. (NeurIPS 2019, Propositions 1-4) and the spectral norms in it.

    ||d xi / d h_{t-1}|| <= lambda_1 ||d xi / d h_t|| + lambda_2 ||d xi / d c_{t+1}||
    lambda_1 = 1/4 ||W_hi||_2 + gamma_1/4 ||W_hf||_2 + ||W_ha||_2 + 1/4 ||W_ho||_2
    lambda_2 = 1/4 ||W_hi||_2 + gamma_1/4 ||W_hf||_2 + ||W_ha||_2

(gamma_1 bounds |c_{t-1}|). Quantization inflates the spectral norms: any W in {-1, +1}^{d x d}
has ||W||_2 >= sqrt(d) (its Frobenius norm is d and ||W||_F <= sqrt(d) ||W||_2). A normalization
replaces each ||W_h*||_2 by its own factor (:meth:`nq_plugin.norm.Normalization.gate_bound_factors`:
Proposition 2 for weight, 3 for layer, 4 for batch / power normalization); Proposition 4 bounds
squared norms, with coefficients 1/2, gamma_1^2/2, 8 and 1/4 of the squared factors.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

GATES = ("i", "f", "a", "o")


def gate_spectral_norms(w_hh: torch.Tensor) -> Dict[str, float]:
    """||W_h*||_2 of the 4 gate blocks of a (4H x H) recurrent matrix."""
    blocks = w_hh.detach().float().reshape(4, -1, w_hh.shape[1])
    norms = torch.linalg.matrix_norm(blocks, ord=2)
    return {g: float(n) for g, n in zip(GATES, norms)}


def lambdas(norms: Dict[str, float], gamma1: float = 1.0, squared: bool = False
            ) -> Dict[str, float]:
    """lambda_1 and lambda_2 from the per-gate factors (the spectral norms for Proposition 1).
    ``squared``: Proposition 4's bound on squared norms, reported as the square roots of its
    coefficients lambda_2^2 = f_i^2/2 + gamma_1^2 f_f^2/2 + 8 f_a^2, lambda_1^2 = lambda_2^2 +
    f_o^2/4."""
    if squared:
        lam2 = norms["i"] ** 2 / 2 + gamma1 ** 2 * norms["f"] ** 2 / 2 + 8 * norms["a"] ** 2
        return {"lambda1": math.sqrt(lam2 + norms["o"] ** 2 / 4), "lambda2": math.sqrt(lam2)}
    lam2 = norms["i"] / 4 + gamma1 * norms["f"] / 4 + norms["a"]
    return {"lambda1": lam2 + norms["o"] / 4, "lambda2": lam2}


def weight_norm_gate_factors(w_hh: torch.Tensor, gain: torch.Tensor) -> Dict[str, float]:
    """g_* ||D_*^{-1} W_h*||_2 per gate (Proposition 2): what replaces ||W_h*||_2 under weight
    normalization (g_* the largest gain of the block, D_* the diagonal of its row norms)."""
    hidden = w_hh.shape[1]
    out = {}
    for k, gate in enumerate(GATES):
        block = w_hh.detach().float()[k * hidden:(k + 1) * hidden]
        rows = block / block.norm(dim=1, keepdim=True).clamp_min(1e-12)
        g = gain.detach().float()[k * hidden:(k + 1) * hidden].abs().max()
        out[gate] = float(g * torch.linalg.matrix_norm(rows, ord=2))
    return out


def per_feature_gate_factors(gate_norms: Dict[str, float], ratio: torch.Tensor
                             ) -> Dict[str, float]:
    """max_j r_j ||W_h*||_2 per gate for a per-feature ratio r = |gain| / sigma (4H,)."""
    blocks = ratio.detach().float().reshape(len(GATES), -1)
    return {g: float(r.max()) * gate_norms[g] for g, r in zip(GATES, blocks)}
