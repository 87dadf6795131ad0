"""Binary quantizers (1 bit per weight): BinaryConnect, BWN and loss-aware binarization.

Signs follow BinaryConnect's deterministic rule sign(0) = +1, so every weight is +-1 (times a
scale): a binary matrix never contains a zero.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import Quantizer, as_blocks, register_quantizer


def binary_sign(weight: torch.Tensor) -> torch.Tensor:
    """+1 where w >= 0, -1 where w < 0: sign(sign(w) + 1/2), which maps sign's 0 to +1 (three
    vectorized passes; ``torch.where`` on a boolean mask was 8x slower on CPU)."""
    return torch.sign(weight).add_(0.5).sign_()


@register_quantizer
class BinaryConnect(Quantizer):
    """``bc`` -- BinaryConnect (Courbariaux et al., NeurIPS 2015): w_q = sign(w) in {-1, +1}."""

    name = "bc"
    bits = 1
    paper_lr_scale = True

    def quantize(self, weight, second_moment=None):
        return binary_sign(weight)


@register_quantizer
class BinaryWeightNetwork(Quantizer):
    """``bwn`` -- binary weight network (Rastegari et al., ECCV 2016): w_q = alpha * sign(w),
    alpha = mean|w| over each gate block."""

    name = "bwn"
    bits = 1
    has_scale = True

    def quantize(self, weight, second_moment=None):
        blocks = as_blocks(weight, self.blocks)
        alpha = blocks.abs().mean(dim=1, keepdim=True)
        return (alpha * binary_sign(blocks)).reshape_as(weight)


class LossAware(Quantizer):
    """Shared plumbing of the loss-aware quantizers (Hou et al., ICLR 2017 / 2018).

    They weigh each entry by D = sqrt(v) + 1e-8, v being Adam's second moment (exp_avg_sq) of that
    weight; D = 1 when no second moment exists yet (before the first optimizer step). The scale
    computed by the last training forward is kept in the buffer ``scale`` (one per gate block):
    in eval mode it is reused, so a trained checkpoint evaluates without its optimizer state.
    """

    uses_second_moment = True
    has_scale = True

    def __init__(self, blocks: int = 4, latent_clip: Optional[float] = None):
        super().__init__(blocks, latent_clip)
        self.register_buffer("scale", torch.full((blocks,), float("nan")))

    @staticmethod
    def preconditioner(weight: torch.Tensor, second_moment: Optional[torch.Tensor]) -> torch.Tensor:
        if second_moment is None:
            return torch.ones_like(weight)
        if second_moment.shape != weight.shape:
            raise ValueError(
                f"second moment has shape {tuple(second_moment.shape)}, weight has "
                f"{tuple(weight.shape)}: the optimizer state does not belong to this weight")
        return second_moment.sqrt() + 1e-8

    def quantize(self, weight, second_moment=None):
        blocks = as_blocks(weight, self.blocks)
        if not self.training and not torch.isnan(self.scale).any():
            alpha = self.scale.to(weight.dtype).unsqueeze(1)
        else:
            d = as_blocks(self.preconditioner(weight, second_moment), self.blocks)
            alpha = self.solve_scale(blocks, d)
            if self.training:
                self.scale.copy_(alpha.squeeze(1))
        return self.apply_scale(blocks, alpha).reshape_as(weight)

    def solve_scale(self, blocks: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply_scale(self, blocks: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_quantizer
class LossAwareBinarization(LossAware):
    """``lab`` -- loss-aware binarization (Hou, Yao & Kwok, ICLR 2017):
    w_q = alpha * sign(w), alpha = sum|D * w| / sum D per gate block, D = sqrt(v) + 1e-8."""

    name = "lab"
    bits = 1

    def solve_scale(self, blocks, d):
        return (d * blocks).abs().sum(dim=1, keepdim=True) / d.sum(dim=1, keepdim=True)

    def apply_scale(self, blocks, alpha):
        return alpha * binary_sign(blocks)
