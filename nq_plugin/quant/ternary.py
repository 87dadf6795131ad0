"""Ternary quantizers (2 bits per weight): TerConnect, TWN and loss-aware ternarization.

All use a strict threshold: an entry with |w| equal to the threshold becomes 0.
"""
from __future__ import annotations

import torch

from .base import Quantizer, as_blocks, register_quantizer
from .binary import LossAware

THRESHOLD_FACTOR = 0.7


def ternary_threshold(blocks: torch.Tensor) -> torch.Tensor:
    """Delta = 0.7 * mean|w| per block (Li & Liu, 2016), shape (blocks, 1)."""
    return THRESHOLD_FACTOR * blocks.abs().mean(dim=1, keepdim=True)


def ternarize(blocks: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """1[w > threshold] - 1[w < -threshold]."""
    return (blocks > threshold).to(blocks.dtype) - (blocks < -threshold).to(blocks.dtype)


@register_quantizer
class TerConnect(Quantizer):
    """``tc`` -- TerConnect (Lin et al., ICLR 2016; threshold of Li & Liu 2016):
    w_q = sign(w) * 1[|w| > Delta] in {-1, 0, +1}, Delta = 0.7 * mean|w| per gate block."""

    name = "tc"
    bits = 2
    paper_lr_scale = True

    def quantize(self, weight, second_moment=None):
        blocks = as_blocks(weight, self.blocks)
        return ternarize(blocks, ternary_threshold(blocks)).reshape_as(weight)


@register_quantizer
class TernaryWeightNetwork(Quantizer):
    """``twn`` -- ternary weight network (Li & Liu, 2016): Delta = 0.7 * mean|w|,
    w_q = alpha * sign(w) * 1[|w| > Delta], alpha = mean of |w| over the entries with |w| > Delta
    (per gate block; alpha = 0 when no entry passes)."""

    name = "twn"
    bits = 2
    has_scale = True

    def quantize(self, weight, second_moment=None):
        blocks = as_blocks(weight, self.blocks)
        t = ternarize(blocks, ternary_threshold(blocks))
        mask = t.abs()
        alpha = (blocks.abs() * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1)
        return (alpha * t).reshape_as(weight)


@register_quantizer
class LossAwareTernarization(LossAware):
    """``lat`` -- loss-aware ternarization (Hou & Kwok, ICLR 2018), exact alternating solver:
    start b = sign(w); repeat alpha = sum|b * D * w| / sum|b * D| and
    b = 1[w > alpha/2] - 1[w < -alpha/2] until alpha changes by <= 1e-6 (per gate block);
    w_q = alpha * b, D = sqrt(v) + 1e-8."""

    name = "lat"
    bits = 2
    tolerance = 1e-6
    max_iterations = 100

    def solve_scale(self, blocks, d):
        b = torch.sign(blocks)
        alpha = torch.zeros(blocks.shape[0], 1, dtype=blocks.dtype, device=blocks.device)
        for _ in range(self.max_iterations):
            bd = (b * d).abs()
            new_alpha = (bd * blocks.abs()).sum(1, keepdim=True) / bd.sum(1, keepdim=True).clamp_min(1e-30)
            converged = bool(((new_alpha - alpha).abs() <= self.tolerance).all())
            alpha = new_alpha
            b = ternarize(blocks, alpha / 2)
            if converged:
                break
        return alpha

    def apply_scale(self, blocks, alpha):
        return alpha * ternarize(blocks, alpha / 2)
