"""Record why a quantized LSTM's gradients explode: ||d xi / d h_t|| for every step of a segment,
the gate spectral norms of the quantized W_h, the bound lambda_1 / lambda_2 of the paper's
propositions for the layer's normalization, and what the quantizer and normalization add
(weight-norm gains g, scales alpha).

:class:`LayerRecorder` is a step observer of :class:`nq_plugin.nn.NQLSTMLayer` (the layer then
runs its autograd loop): at every step it puts a tensor hook on h_t (the hook receives the total
gradient: through the output at t and through the recurrence) and notes |c_t| and the spread of
the recurrent term. When the backward has passed every h_t, it completes a
:class:`~nq_plugin.diagnostics.record.GradNormRecord` and hands it on. It is used only on logging
steps; otherwise nothing is hooked. ``||d xi / d h_t||`` is the norm over the whole (B, H)
gradient, i.e. sqrt(sum_k ||d xi / d h_t^k||^2) (the left side of Proposition 4).

What replaces ||W_h*||_2 in the bound is each normalization's business
(:meth:`nq_plugin.norm.Normalization.gate_bound_factors`); gamma_1 = max |c| over the segment.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, List, Optional

import torch

from ..norm import BoundNotDefined
from ..norm.bounds import GATES, gate_spectral_norms, lambdas
from .record import GradNormRecord

logger = logging.getLogger(__name__)
_warned = set()


class LayerRecorder:
    """Step observer of one layer for one forward; ``on_complete(record)`` is called once the
    backward pass has reached every recorded h_t."""

    def __init__(self, layer, on_complete: Callable[[GradNormRecord], None], forward: int = 0,
                 layer_index: int = 0, update: Optional[int] = None):
        self.layer, self.on_complete = layer, on_complete
        self.forward, self.layer_index, self.update = forward, layer_index, update
        self.grads: List[Optional[float]] = []
        self.pending = 0
        self.c_max = 0.0
        self.sigmas: List[List[float]] = [[] for _ in GATES]

    def __call__(self, t: int, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> None:
        with torch.no_grad():
            self.c_max = max(self.c_max, float(c.detach().abs().max()))
            blocks = z.detach().view(z.shape[0], len(GATES), -1)
            for k, sigma in enumerate(blocks.std(dim=2, unbiased=False).mean(0).tolist()):
                self.sigmas[k].append(sigma)
        index = len(self.grads)
        self.grads.append(None)
        if h.requires_grad:
            self.pending += 1
            h.register_hook(self._hook(index))

    def _hook(self, index: int):
        def hook(grad):
            self.grads[index] = float(grad.detach().norm())
            self.pending -= 1
            if self.pending == 0:
                self.on_complete(self.record())
        return hook

    @torch.no_grad()
    def record(self) -> GradNormRecord:
        layer = self.layer
        w_q = layer.quantized_weights()[1].detach()
        norms = gate_spectral_norms(w_q)
        sigma_blocks = [sum(s) / len(s) if s else 0.0 for s in self.sigmas]
        norm = layer.hh_norm
        try:
            factors = norm.gate_bound_factors(w_q, norms, sigma_blocks)
            bound = lambdas(factors, self.c_max, squared=norm.bound_on_squares)
        except BoundNotDefined as err:
            if type(norm) not in _warned:
                _warned.add(type(norm))
                logger.warning("nq_plugin diagnostics: %s; lambda_1/lambda_2 are not recorded",
                               err)
            factors, bound = None, {"lambda1": None, "lambda2": None}
        alpha = None
        if layer.hh_quantizer.has_scale:
            blocks = w_q.reshape(len(GATES), -1)
            alpha = {g: float(b.abs().max()) for g, b in zip(GATES, blocks)}
        return GradNormRecord(
            grad_h=list(self.grads), forward=self.forward, layer=self.layer_index,
            update=self.update, steps=len(self.grads), quantizer=layer.quantizer_name,
            norm=layer.norm_name, gamma1=self.c_max, spectral_norms=norms,
            bound_factors=factors, sqrt_hidden=math.sqrt(layer.hidden_size), alpha=alpha,
            **bound, **norm.diagnostic_fields())


def recorded_forward(layer, x: torch.Tensor, state, t0: int,
                     on_complete: Callable[[dict], None]):
    """Forward of ``layer`` (an NQLSTMLayer) observed by a :class:`LayerRecorder`; once the
    backward has passed every h_t, ``on_complete`` receives the record as a dict. Returns
    (out, (h, c)) like the layer."""
    import dataclasses
    recorder = LayerRecorder(layer, lambda record: on_complete(dataclasses.asdict(record)))
    return layer(x, state, t0, observer=recorder)
