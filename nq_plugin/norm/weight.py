"""Weight normalization of a (quantized) weight matrix."""
from __future__ import annotations

import torch
from torch import nn

from .base import Normalization, IdentityOnActivations, register_normalization
from .bounds import GATES


class _RowNormalized(torch.autograd.Function):
    """W' = W * (g / max(||W_j||, eps)) per row j, with the backward in two passes over W:
    r_j = dW'_j . W_j, dg_j = r_j / n_j, dW_j = (g_j / n_j) (dW'_j - W_j r_j / n_j^2) (the
    second term only where the norm is not clamped). Autograd through norm, clamp and the
    products took about 1.6x as long (PTB word, d=300: half a millisecond a matrix a step)."""

    @staticmethod
    def forward(ctx, weight, gain, eps):
        norm = torch.linalg.vector_norm(weight, dim=1, keepdim=True).clamp_min_(eps)
        scale = gain.unsqueeze(1) / norm
        ctx.eps = eps
        ctx.save_for_backward(weight, norm, scale)
        return weight * scale

    @staticmethod
    def backward(ctx, grad):
        weight, norm, scale = ctx.saved_tensors
        r = torch.linalg.vecdot(grad, weight, dim=1).unsqueeze(1)
        grad_gain = (r / norm).squeeze(1) if ctx.needs_input_grad[1] else None
        grad_weight = None
        if ctx.needs_input_grad[0]:
            coef = torch.where(norm > ctx.eps, r / (norm * norm), torch.zeros_like(r))
            grad_weight = torch.addcmul(grad, weight, coef, value=-1).mul_(scale)
        return grad_weight, grad_gain, None


@register_normalization
class WeightNorm(IdentityOnActivations, Normalization):
    """``weight`` -- weight normalization (Salimans & Kingma, NeurIPS 2016) of the quantized
    matrix, per row j: W'_j = g_j W_j / ||W_j||, so N(W x)_j = g_j W_j.x / ||W_j||.
    The gains g start at the row norms of the initial latent weight (Hou et al., NeurIPS 2019);
    for ``fp`` the initial layer is then exactly the unnormalized one. At inference W' is a
    row scaling of the quantized matrix, which the packer folds into the packed per-row scale:
    nothing is left to apply to the product."""

    name = "weight"
    eps = 1e-12

    def __init__(self, features: int, blocks: int = 4):
        super().__init__(features, blocks)
        self.gain = nn.Parameter(torch.ones(features))

    def init_from_weight(self, weight):
        with torch.no_grad():
            self.gain.copy_(weight.norm(dim=1))

    def weight(self, weight):
        return _RowNormalized.apply(weight, self.gain, self.eps)

    def counted_parameters(self):
        return self.features

    def gate_bound_factors(self, w_q, gate_norms, block_sigmas):
        """Proposition 2: g_* ||D_*^{-1} W_h*||_2 (D_* the diagonal of the block's row norms)."""
        from .bounds import weight_norm_gate_factors
        return weight_norm_gate_factors(w_q, self.gain)

    def diagnostic_fields(self):
        """The gains g per gate (mean, min, max): the paper's Fig. 5."""
        gains = self.gain.detach().reshape(self.blocks, -1)
        return {"g": {gate: {"mean": float(v.mean()), "min": float(v.min()),
                             "max": float(v.max())} for gate, v in zip(GATES, gains)}}
