"""Layer normalization of a gate pre-activation term."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import NativeForm, Normalization, register_normalization
from .folded import FoldedNorm
from .bounds import GATES


def _layer_norm(y, gain, shift, blocks, eps):
    """gain * LN(y) + shift with the statistics of each of the ``blocks`` gate blocks."""
    shape = y.shape
    z = F.layer_norm(y.reshape(*shape[:-1], blocks, shape[-1] // blocks), (shape[-1] // blocks,),
                     eps=eps)
    return torch.addcmul(shift, z.reshape(shape), gain)


class FoldedLayerNorm(FoldedNorm):
    """Layer norm at inference: its gain and shift (``ln_gain``, ``ln_shift``, (F,)); the
    statistics are the sample's own, so N(y) = gain * LN_blocks(y) + shift as in training."""

    eps = 1e-5

    @classmethod
    def shapes(cls, features, steps):
        return {"ln_gain": (features,), "ln_shift": (features,)}

    def apply(self, y, t):
        return _layer_norm(y, self.tensors["ln_gain"], self.tensors["ln_shift"], 4, self.eps)

    def native(self):
        return (NativeForm(NativeForm.ROW_BLOCKS, eps=self.eps), self.tensors["ln_gain"],
                self.tensors["ln_shift"])

    def fused_step_terms(self, row_scale, layer_norm):
        if not layer_norm:
            return None
        return (self.tensors["ln_gain"].float()[None], self.tensors["ln_shift"].float()[None],
                (row_scale.float().contiguous(), float(self.eps)))


@register_normalization
class LayerNorm(Normalization):
    """``layer`` -- layer normalization (Ba et al., 2016) per gate over its H features:
    N(y)_k = gain_k (y_k - mean_k) / sqrt(var_k + eps) + shift_k, with mean/var over the H entries
    of each gate block k in (i, f, a, o). Gain starts at ``gain_init`` (1 for LMs, 0.1 in the
    reference sequential-MNIST code), shift at 0."""

    name = "layer"
    acts_on_activations = True
    eps = FoldedLayerNorm.eps
    folded_type = FoldedLayerNorm

    def __init__(self, features: int, blocks: int = 4, gain_init: float = 1.0):
        super().__init__(features, blocks)
        self.hidden = features // blocks
        self.gain = nn.Parameter(torch.full((features,), float(gain_init)))
        self.shift = nn.Parameter(torch.zeros(features))

    @classmethod
    def from_options(cls, features, options):
        return cls(features, gain_init=options.layer_norm_gain)

    def _normalize(self, y):
        return _layer_norm(y, self.gain, self.shift, self.blocks, self.eps)

    def affine(self):
        return self.gain, self.shift

    def step_stats(self, z, t):
        shape = z.shape
        z_hat, mean, rstd = torch.native_layer_norm(z.reshape(shape[0], self.blocks, self.hidden),
                                                    [self.hidden], None, None, self.eps)
        return z_hat.reshape(shape), (mean, rstd)

    def native_form(self, batch):
        return NativeForm(NativeForm.ROW_BLOCKS, eps=self.eps)

    def step_backward(self, grad_z_hat, z, z_hat, saved, t):
        mean, rstd = saved
        shape = z.shape
        view = (shape[0], self.blocks, self.hidden)
        grad, _, _ = torch.ops.aten.native_layer_norm_backward(
            grad_z_hat.reshape(view), z.reshape(view), [self.hidden], mean, rstd, None, None,
            [True, False, False])
        return grad.reshape(shape)

    def step(self, y, t):
        return self._normalize(y)

    def sequence(self, y, t0=0):
        return self._normalize(y)

    def counted_parameters(self):
        return 2 * self.features

    # inference: the statistics depend on the sample, so gain and shift are kept as they are
    def fold(self):
        return FoldedLayerNorm({"ln_gain": self.gain.detach().float().clone(),
                                "ln_shift": self.shift.detach().float().clone()})

    def gate_bound_factors(self, w_q, gate_norms, block_sigmas):
        """Proposition 3: (g_* / sigma_*) ||W_h*||_2, sigma_* the mean (over batch and steps)
        standard deviation of the block's pre-activations, g_* its largest gain."""
        gains = self.gain.detach().abs().reshape(self.blocks, -1)
        return {g: float(gains[k].max()) / max(block_sigmas[k], 1e-12) * gate_norms[g]
                for k, g in enumerate(GATES)}
