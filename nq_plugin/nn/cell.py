"""The LSTM cell, written once: every executor (the autograd loop, the loop with the
hand-written backward, the packed inference loop, the gradient recorder; the native kernels
take it as their reference) calls :func:`lstm_cell`.

With gate pre-activations g = [i f a o] (B, 4H) and the previous cell state c_{t-1}:

    c_t = sigma(i) * tanh(a) + sigma(f) * c_{t-1},   h_t = sigma(o) * tanh(c_t)
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def gate_activations(gates: torch.Tensor) -> torch.Tensor:
    """[sigma(i) sigma(f) tanh(a) sigma(o)] (B, 4H). Without autograd the tanh block is
    written into the sigmoid's output in place (one (B, 4H) buffer)."""
    hidden = gates.shape[-1] // 4
    acts = torch.sigmoid(gates)
    if torch.is_grad_enabled() and gates.requires_grad:
        # sigmoid's backward reads its output: build a new tensor instead of writing into it
        return torch.cat((acts[:, :2 * hidden], torch.tanh(gates[:, 2 * hidden:3 * hidden]),
                          acts[:, 3 * hidden:]), 1)
    torch.tanh(gates[:, 2 * hidden:3 * hidden], out=acts[:, 2 * hidden:3 * hidden])
    return acts


def lstm_cell(gates: torch.Tensor, c_prev: torch.Tensor, h_out: Optional[torch.Tensor] = None
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM step from its gate pre-activations. Returns (h_t, c_t, acts, tanh(c_t)); the
    last two are what a hand-written backward needs. ``h_out`` (B, H), when given, receives
    h_t (e.g. a slice of the output sequence; not under autograd)."""
    hidden = c_prev.shape[-1]
    acts = gate_activations(gates)
    i, f = acts[:, :hidden], acts[:, hidden:2 * hidden]
    a, o = acts[:, 2 * hidden:3 * hidden], acts[:, 3 * hidden:]
    c = torch.addcmul(f * c_prev, i, a)
    tanh_c = torch.tanh(c)
    h = o * tanh_c if h_out is None else torch.mul(o, tanh_c, out=h_out)
    return h, c, acts, tanh_c
