"""Weight normalization of a (quantized) weight matrix."""
from __future__ import annotations

import torch
from torch import nn

from .base import Normalization, register_normalization


@register_normalization
class WeightNorm(Normalization):
    """``weight`` -- weight normalization (Salimans & Kingma, NeurIPS 2016) of the quantized
    matrix, per row j: W'_j = g_j W_j / ||W_j||, so N(W x)_j = g_j W_j.x / ||W_j||.
    The gains g start at the row norms of the initial latent weight (Hou et al., NeurIPS 2019);
    for ``fp`` the initial layer is then exactly the unnormalized one."""

    name = "weight"
    acts_on_weight = True
    eps = 1e-12

    def __init__(self, features: int, blocks: int = 4):
        super().__init__(features, blocks)
        self.gain = nn.Parameter(torch.ones(features))

    @classmethod
    def from_options(cls, features, **_):
        return cls(features)

    def init_from_weight(self, weight):
        with torch.no_grad():
            self.gain.copy_(weight.norm(dim=1))

    def weight(self, weight):
        norm = weight.norm(dim=1, keepdim=True).clamp_min(self.eps)
        return weight * (self.gain.unsqueeze(1) / norm)

    def counted_parameters(self):
        return self.features
