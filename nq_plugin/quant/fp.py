"""Full precision: the identity 'quantizer' (32 bits per weight)."""
from __future__ import annotations

from typing import Optional

import torch

from .base import Quantizer, register_quantizer


@register_quantizer
class FullPrecision(Quantizer):
    """``fp``: no quantization, w_q = w (32 bits per weight)."""

    name = "fp"
    bits = 32

    def quantize(self, weight, second_moment=None):
        return weight

    def forward(self, weight: torch.Tensor, second_moment: Optional[torch.Tensor] = None):
        if self.latent_clip is not None and self.training:
            with torch.no_grad():
                weight.clamp_(-self.latent_clip, self.latent_clip)
        return weight

    def compact(self, latent, encodings=("int8_rows", "bfloat16"), max_rounds=16):
        """None: the identity keeps no rounding exact (the zoo stores a full-precision weight
        with its lossy ``floats`` encoding, and measures the cost)."""
        return None
