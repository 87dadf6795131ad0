"""The gradient bound of Hou et al. (NeurIPS 2019, Proposition 1) and the spectral norms in it.

    ||d xi / d h_{t-1}|| <= lambda_1 ||d xi / d h_t|| + lambda_2 ||d xi / d c_{t+1}||
    lambda_1 = 1/4 ||W_hi||_2 + gamma_1/4 ||W_hf||_2 + ||W_ha||_2 + 1/4 ||W_ho||_2
    lambda_2 = 1/4 ||W_hi||_2 + gamma_1/4 ||W_hf||_2 + ||W_ha||_2

(gamma_1 bounds |c_{t-1}|). Quantization inflates the spectral norms: any W in {-1, +1}^{d x d}
has ||W||_2 >= sqrt(d) (its Frobenius norm is d and ||W||_F <= sqrt(d) ||W||_2). With weight
normalization the bound uses g_* ||D_*^{-1} W_h*||_2 instead (Proposition 2), which does not
change when W is scaled. Plain PyTorch; recording during training is future work (see the
diagnostics issue).
"""
from __future__ import annotations

from typing import Dict

import torch

GATES = ("i", "f", "a", "o")


def gate_spectral_norms(w_hh: torch.Tensor) -> Dict[str, float]:
    """||W_h*||_2 of the 4 gate blocks of a (4H x H) recurrent matrix."""
    blocks = w_hh.detach().float().reshape(4, -1, w_hh.shape[1])
    norms = torch.linalg.matrix_norm(blocks, ord=2)
    return {g: float(n) for g, n in zip(GATES, norms)}


def lambdas(norms: Dict[str, float], gamma1: float = 1.0) -> Dict[str, float]:
    """lambda_1 and lambda_2 of Proposition 1 from the gate spectral norms."""
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
