"""Record why a quantized LSTM's gradients explode: ||d xi / d h_t|| for every step of a segment,
the gate spectral norms of the effective W_h, the bound lambda_1 / lambda_2 of the poster's
proposition for the layer's normalization, weight-norm gains g and BWN/TWN scales alpha.

:func:`recorded_forward` runs one layer's forward with the per-step loop under plain autograd
and a tensor hook on each h_t (the hook receives the total gradient: through the output at t
and through the recurrence). It is used only on logging steps; otherwise nothing is hooked.
``||d xi / d h_t||`` is the norm over the whole (B, H) gradient, i.e.
sqrt(sum_k ||d xi / d h_t^k||^2) (the left side of Proposition 4).

Bounds (Hou et al., NeurIPS 2019; gamma_1 = max |c| over the segment):
* none:   Prop. 1 with ||W_h*||_2 of the quantized matrix;
* weight: Prop. 2, ||W_h*||_2 -> g_* ||D_*^{-1} W_h*||_2;
* layer:  Prop. 3, ||W_h*||_2 -> (g_* / sigma_*) ||W_h*||_2, sigma_* the mean (over batch and
          steps) standard deviation of the block's pre-activations, g_* its largest gain;
* batch / power: Prop. 4 (squared norms; reported as the square roots of its coefficients),
          ||W_h*||_2 -> max_j (g_j / sigma_j) ||W_h*||_2 with sigma_j the feature's running
          standard deviation (PowerNorm: running quadratic mean).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from .bounds import GATES, gate_spectral_norms, weight_norm_gate_factors


def _blocks(v: torch.Tensor, hidden: int) -> List[torch.Tensor]:
    return [v[k * hidden:(k + 1) * hidden] for k in range(4)]


def bound_factors(layer, w_q: torch.Tensor, sigma_blocks: Optional[List[float]]) -> Dict[str, float]:
    """The per-gate factor replacing ||W_h*||_2 in the bound for the layer's normalization."""
    hidden = layer.hidden_size
    norms = gate_spectral_norms(w_q)
    kind = layer.norm_name
    if kind == "weight":
        return weight_norm_gate_factors(w_q, layer.hh_norm.gain)
    if kind == "layer":
        gains = _blocks(layer.hh_norm.gain.detach().abs(), hidden)
        return {g: float(gains[k].max()) / max(sigma_blocks[k], 1e-12) * norms[g]
                for k, g in enumerate(GATES)}
    if kind in ("batch", "power"):
        norm = layer.hh_norm
        var = norm.running_var.mean(0) if kind == "batch" else norm.running_phi
        ratio = norm.gain.detach().abs() / torch.sqrt(var + norm.eps)
        return {g: float(r.max()) * norms[g] for g, r in zip(GATES, _blocks(ratio, hidden))}
    return norms


def bound_lambdas(kind: str, factors: Dict[str, float], gamma1: float) -> Dict[str, float]:
    if kind in ("batch", "power"):  # Prop. 4: coefficients of squared norms
        lam2 = (factors["i"] ** 2 / 2 + gamma1 ** 2 * factors["f"] ** 2 / 2
                + 8 * factors["a"] ** 2)
        lam1 = lam2 + factors["o"] ** 2 / 4
        return {"lambda1": math.sqrt(lam1), "lambda2": math.sqrt(lam2)}
    lam2 = factors["i"] / 4 + gamma1 * factors["f"] / 4 + factors["a"]
    return {"lambda1": lam2 + factors["o"] / 4, "lambda2": lam2}


def recorded_forward(layer, x: torch.Tensor, state, t0: int,
                     on_complete: Callable[[Dict[str, object]], None]):
    """Forward of ``layer`` (an NQLSTMLayer) that fills a record once the backward has passed
    every h_t, then calls ``on_complete(record)``. Returns (out, (h, c)) like the layer."""
    batch = x.shape[1]
    hidden = layer.hidden_size
    if state is None:
        zeros = x.new_zeros(batch, hidden)
        state = (zeros, zeros)
    layer.ih_norm.begin_forward()
    layer.hh_norm.begin_forward()
    w_ih, w_hh = layer.effective_weights()
    with torch.no_grad():
        w_q = layer._quantize(layer.hh_quantizer, layer.weight_hh).detach()
    px = layer.ih_norm.sequence(F.linear(x, w_ih), t0) + layer.bias
    steps = px.shape[0]
    grads: List[Optional[float]] = [None] * steps
    record: Dict[str, object] = {"steps": steps}
    h, c = state
    outputs, c_max, sigmas = [], 0.0, [[] for _ in range(4)]
    pending = [steps]

    def hook_for(t):
        def hook(grad):
            grads[t] = float(grad.detach().norm())
            pending[0] -= 1
            if pending[0] == 0:
                record["grad_h"] = grads
                on_complete(record)
        return hook

    w_hh_t = w_hh.t()
    for t, px_t in enumerate(px.unbind(0)):
        z = torch.mm(h, w_hh_t)
        if layer.norm_name == "layer":
            with torch.no_grad():
                for k, block in enumerate(z.view(batch, 4, hidden).unbind(1)):
                    sigmas[k].append(float(block.std(dim=1, unbiased=False).mean()))
        gates = px_t + layer.hh_norm.step(z, t0 + t)
        sig = torch.sigmoid(gates)
        a = torch.tanh(gates[:, 2 * hidden:3 * hidden])
        c = torch.addcmul(sig[:, hidden:2 * hidden] * c, sig[:, :hidden], a)
        h = sig[:, 3 * hidden:] * torch.tanh(c)
        c_max = max(c_max, float(c.detach().abs().max()))
        if h.requires_grad:
            h.register_hook(hook_for(t))
        outputs.append(h)
    with torch.no_grad():
        sigma_blocks = [sum(s) / len(s) for s in sigmas] if layer.norm_name == "layer" else None
        factors = bound_factors(layer, w_q, sigma_blocks)
        record.update({
            "quantizer": layer.quantizer_name, "norm": layer.norm_name, "gamma1": c_max,
            "spectral_norms": gate_spectral_norms(w_q),
            "bound_factors": factors, **bound_lambdas(layer.norm_name, factors, c_max),
            "sqrt_hidden": math.sqrt(hidden),
        })
        if layer.norm_name == "weight":
            gains = _blocks(layer.hh_norm.gain.detach(), hidden)
            record["g"] = {g: {"mean": float(v.mean()), "min": float(v.min()),
                               "max": float(v.max())} for g, v in zip(GATES, gains)}
        if layer.quantizer_name in ("bwn", "twn", "lab", "lat"):
            record["alpha"] = {g: float(b.abs().max()) for g, b in zip(GATES, _blocks(w_q, hidden))}
    return torch.stack(outputs), (h, c)
