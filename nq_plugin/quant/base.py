"""Quantizer base class, straight-through estimator and the name registry.

A quantizer maps a latent full-precision weight matrix to its quantized copy. The LSTM holds
W_x (4H x n) and W_h (4H x H); each is quantized per gate block (i, f, a, o), i.e. with one
scale / threshold per block, 8 per layer as in the reference code of Hou et al. (NeurIPS 2019).

The forward pass uses the quantized copy; the gradient reaches the latent weight unchanged
(identity straight-through estimator, Bengio et al. 2013; Courbariaux et al. 2015). Optionally,
BinaryConnect's latent clipping keeps the latent weights in [-c, c] and cancels the gradient of
entries outside it.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Type

import torch
from torch import nn

SecondMomentFn = Callable[[torch.Tensor], Optional[torch.Tensor]]


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized tensor. Backward: the incoming gradient, passed to the latent weight
    unchanged, or zeroed where |w| > clip (BinaryConnect's gradient cancellation)."""

    @staticmethod
    def forward(ctx, latent, quantized, clip):
        ctx.clip = clip
        if clip is not None:
            ctx.save_for_backward(latent)
        return quantized

    @staticmethod
    def backward(ctx, grad):
        if ctx.clip is not None:
            (latent,) = ctx.saved_tensors
            grad = grad * (latent.abs() <= ctx.clip).to(grad.dtype)
        return grad, None, None


def straight_through(latent: torch.Tensor, quantized: torch.Tensor,
                     clip: Optional[float] = None) -> torch.Tensor:
    """Return ``quantized`` in the forward pass; route the gradient to ``latent`` (identity STE)."""
    return _StraightThrough.apply(latent, quantized.detach(), clip)


def as_blocks(weight: torch.Tensor, blocks: int) -> torch.Tensor:
    """View a (blocks*H, n) matrix as (blocks, H*n) so that one scale per gate block is a row
    reduction."""
    rows = weight.shape[0]
    if rows % blocks:
        raise ValueError(f"weight has {rows} rows, not divisible into {blocks} gate blocks")
    return weight.reshape(blocks, -1)


class Quantizer(nn.Module):
    """Base class. Subclasses implement :meth:`quantize` (no gradient bookkeeping) and declare
    what the rest of the package needs to know, so that nothing else branches on their names:

    * ``bits``: bits per weight (32, 1 or 2), read by the size accounting and the packer;
    * ``has_scale``: the quantized weights carry a learned or computed scale alpha per gate
      block (BWN, TWN, LAB, LAT), recorded by the diagnostics (the paper's Fig. 4);
    * ``paper_lr_scale``: the paper scales the learning rate of the latent weights by 2/a with
      a = 1/sqrt(H) (BinaryConnect, TerConnect, whose weights have no scale), see
      :meth:`latent_lr_scale`;
    * ``uses_second_moment``: needs the optimizer's second moment (LAB, LAT).
    """

    name: str = ""
    bits: int = 32
    has_scale: bool = False
    paper_lr_scale: bool = False
    uses_second_moment: bool = False

    def __init__(self, blocks: int = 4, latent_clip: Optional[float] = None):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        if latent_clip is not None and latent_clip <= 0:
            raise ValueError(f"latent_clip must be positive, got {latent_clip}")
        self.blocks = blocks
        self.latent_clip = latent_clip

    def quantize(self, weight: torch.Tensor, second_moment: Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
        raise NotImplementedError

    def latent_lr_scale(self, hidden_size: int) -> float:
        """Learning-rate multiplier of the latent weights (read by the fairseq optimizers):
        2 sqrt(H) where ``paper_lr_scale`` holds (Hou et al., NeurIPS 2019), else 1."""
        return 2.0 * math.sqrt(hidden_size) if self.paper_lr_scale else 1.0

    def forward(self, weight: torch.Tensor, second_moment: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """Quantized copy of ``weight`` with a straight-through gradient to ``weight``."""
        if self.latent_clip is not None and self.training:
            with torch.no_grad():  # BinaryConnect: keep the latent weights in [-c, c]
                weight.clamp_(-self.latent_clip, self.latent_clip)
        with torch.no_grad():
            q = self.quantize(weight.detach(), second_moment)
        return straight_through(weight, q, self.latent_clip)

    def compact(self, latent: torch.Tensor, encodings: Sequence[str] = ("int8_rows", "bfloat16"),
                max_rounds: int = 16):
        """The latent weight stored in the first of ``encodings``
        (:data:`nq_plugin.storage.ENCODINGS`) that keeps this quantizer's output exact -- the
        quantized weights of the decoded tensor equal those of ``latent`` bit for bit, as
        evaluation computes them (eval mode) -- as a :class:`nq_plugin.storage.Stored`; None
        when none does (full precision; a scale computed from the latent values, as BWN's).

        Rounding moves an entry by less than one step of the encoding, so an entry whose
        quantized value changed lies within one step of a decision boundary (sign 0, a ternary
        threshold): moved one step up, or else one step down, it is back on its side. The
        boundary itself may move with the repaired values (a threshold of mean|w|), hence up
        to ``max_rounds`` rounds."""
        from ..storage import ENCODINGS, Stored
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                latent = latent.detach().float()
                target = self.quantize(latent)
                for name in encodings:
                    enc = ENCODINGS[name]
                    parts = enc.encode(latent)
                    for _ in range(max_rounds):
                        decoded = enc.decode(parts)
                        wrong = self.quantize(decoded) != target
                        count = int(wrong.sum())
                        if count == 0:
                            return Stored(name, parts)
                        if count > wrong.numel() // 4:
                            break  # not a rounding effect: this encoding cannot keep it
                        up = torch.ones_like(latent)
                        fixed = wrong & (self.quantize(enc.decode(enc.step(parts, wrong, up)))
                                         == target)
                        parts = enc.step(enc.step(parts, fixed, up), wrong & ~fixed, -up)
        finally:
            self.train(was)
        return None

    def extra_repr(self) -> str:
        clip = f", latent_clip={self.latent_clip}" if self.latent_clip is not None else ""
        return f"bits={self.bits}, blocks={self.blocks}{clip}"


QUANTIZERS: Dict[str, Type[Quantizer]] = {}


def register_quantizer(cls: Type[Quantizer]) -> Type[Quantizer]:
    if not cls.name or cls.name in QUANTIZERS:
        raise ValueError(f"quantizer name {cls.name!r} is empty or already registered")
    QUANTIZERS[cls.name] = cls
    return cls


def build_quantizer(name: str, blocks: int = 4, latent_clip: Optional[float] = None) -> Quantizer:
    """Build a quantizer by its name (``fp``, ``bc``, ``tc``, ``bwn``, ``twn``, ``lab``, ``lat``)."""
    try:
        cls = QUANTIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown quantizer {name!r}; choose one of {', '.join(sorted(QUANTIZERS))}"
        ) from None
    return cls(blocks=blocks, latent_clip=latent_clip)
