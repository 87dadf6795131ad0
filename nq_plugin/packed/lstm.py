"""Packed inference LSTM: computes from packed weight words (1 or 2 bits per weight).

:func:`pack_layer` turns a trained :class:`nq_plugin.nn.NQLSTMLayer` (eval mode) into the tensors
of the packed format: codes and one folded scale per row for each quantized matrix (fp32 for
full-precision ones), the LSTM bias, and the inference normalization -- layer norm kept as gain
and shift (it depends on the sample), batch norm and PowerNorm folded into a per-feature affine
map (per time step for separate statistics). :class:`PackedNQLSTMLayer` runs it:

    g_t = A_x[t] (s_x * B_x x_t) + A_h[t] (s_h * B_h h_{t-1}) + shift[t]      (batch / power)
    g_t = LN_x(s_x * B_x x_t) + LN_h(s_h * B_h h_{t-1}) + b                    (layer)
    g_t = s_x * B_x x_t + s_h * B_h h_{t-1} + b                                 (none / weight)

The products B x come from :mod:`nq_plugin.packed.kernels`: a Triton kernel on GPU; on CPU the
native kernel for batches of at most 8 (it computes from the packed words), else the PyTorch
path (it unpacks a matrix once per forward call, for all time steps, and frees it; for
none/weight norm the unpacked matrices then go through torch's fused LSTM kernel).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.lstm import NQLSTM, NQLSTMLayer
from .format import PackedFormatError, num_words, pack_matrix, plane_names, split_codes
from .kernels import PackedMatrix, native

logger = logging.getLogger(__name__)


@torch.no_grad()
def pack_layer(layer: NQLSTMLayer) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Packed tensors and layer metadata of a trained layer (evaluated in eval mode)."""
    was_training = layer.training
    layer.eval()
    try:
        # what every eval forward does first (PowerNorm folds its last training statistics)
        layer.ih_norm.begin_forward()
        layer.hh_norm.begin_forward()
        effective = layer.effective_weights()
        tensors: Dict[str, torch.Tensor] = {}
        meta: Dict[str, object] = {"input_size": layer.input_size, "hidden_size": layer.hidden_size,
                                   "quantizer": layer.quantizer_name, "norm": layer.norm_name}
        for name, quantizer, latent, w_eff in (("ih", layer.ih_quantizer, layer.weight_ih,
                                                effective[0]),
                                               ("hh", layer.hh_quantizer, layer.weight_hh,
                                                effective[1])):
            bits = quantizer.bits
            meta[f"{name}_bits"] = bits
            if bits == 32:
                tensors[f"{name}_weight"] = w_eff.detach().float().contiguous()
                continue
            w_q = layer._quantize(quantizer, latent).detach()
            codes, _ = split_codes(w_q, bits)
            for plane, words in pack_matrix(codes, bits).items():
                tensors[f"{name}_{plane}"] = words
            # folded per-row scale: w_eff_j = s_j * codes_j (quantizer scale x weight-norm factor)
            tensors[f"{name}_scale"] = ((w_eff * codes).sum(1)
                                        / (codes * codes).sum(1).clamp_min(1)).float()
        tensors["bias"] = layer.bias.detach().float().clone()
        for name, norm in (("ih", layer.ih_norm), ("hh", layer.hh_norm)):
            kind = norm.name
            if kind == "layer":
                tensors[f"{name}_ln_gain"] = norm.gain.detach().float().clone()
                tensors[f"{name}_ln_shift"] = norm.shift.detach().float().clone()
            elif kind == "batch":
                scale = norm.gain / torch.sqrt(norm.running_var + norm.eps)
                tensors[f"{name}_affine_scale"] = scale.float().contiguous()
                tensors[f"{name}_affine_shift"] = (norm.shift - norm.running_mean * scale).float()
            elif kind == "power":
                scale = norm.gain / torch.sqrt(norm.running_phi + norm.eps)
                tensors[f"{name}_affine_scale"] = scale.float().unsqueeze(0).contiguous()
                tensors[f"{name}_affine_shift"] = norm.shift.detach().float().unsqueeze(0).clone()
        return tensors, meta
    finally:
        layer.train(was_training)


def layer_shapes(meta: Dict[str, object], norm_steps: int) -> Dict[str, Tuple[int, ...]]:
    """Shape of every tensor of a packed layer, from its metadata (used to check files)."""
    hidden, inp = int(meta["hidden_size"]), int(meta["input_size"])
    gates = 4 * hidden
    shapes: Dict[str, Tuple[int, ...]] = {"bias": (gates,)}
    for name, cols in (("ih", inp), ("hh", hidden)):
        bits = int(meta[f"{name}_bits"])
        if bits == 32:
            shapes[f"{name}_weight"] = (gates, cols)
        else:
            for plane in plane_names(bits):
                shapes[f"{name}_{plane}"] = (gates, num_words(cols))
            shapes[f"{name}_scale"] = (gates,)
        if meta["norm"] == "layer":
            shapes[f"{name}_ln_gain"] = shapes[f"{name}_ln_shift"] = (gates,)
        elif meta["norm"] in ("batch", "power"):
            steps = norm_steps if meta["norm"] == "batch" else 1
            shapes[f"{name}_affine_scale"] = shapes[f"{name}_affine_shift"] = (steps, gates)
    return shapes


class PackedNQLSTMLayer(nn.Module):
    """One packed LSTM layer; buffers as produced by :func:`pack_layer`."""

    def __init__(self, meta: Dict[str, object], norm_steps: int = 1):
        super().__init__()
        self.meta = dict(meta)
        self.input_size = int(meta["input_size"])
        self.hidden_size = int(meta["hidden_size"])
        self.norm = str(meta["norm"])
        for key, shape in layer_shapes(meta, norm_steps).items():
            dtype = torch.int32 if key.endswith(("_plus", "_nonzero", "_negative")) else torch.float32
            self.register_buffer(key, torch.zeros(shape, dtype=dtype))

    def matrix(self, name: str) -> PackedMatrix:
        bits = int(self.meta[f"{name}_bits"])
        cols = self.input_size if name == "ih" else self.hidden_size
        if bits == 32:
            return PackedMatrix.dense(getattr(self, f"{name}_weight"))
        planes = {p: getattr(self, f"{name}_{p}") for p in plane_names(bits)}
        return PackedMatrix(planes, getattr(self, f"{name}_scale"), bits, cols)

    def _normalize(self, name: str, y: torch.Tensor, slots) -> torch.Tensor:
        if self.norm == "layer":
            shape = y.shape
            z = F.layer_norm(y.reshape(*shape[:-1], 4, self.hidden_size), (self.hidden_size,),
                             eps=1e-5).reshape(shape)
            return torch.addcmul(getattr(self, f"{name}_ln_shift"), z,
                                 getattr(self, f"{name}_ln_gain"))
        if self.norm in ("batch", "power"):
            scale = getattr(self, f"{name}_affine_scale")[slots]
            shift = getattr(self, f"{name}_affine_shift")[slots]
            return torch.addcmul(shift, y, scale)
        return y

    def _slots(self, t0: int, steps: int, device):
        if self.norm == "batch":
            last = getattr(self, "ih_affine_scale").shape[0] - 1
            return torch.clamp(torch.arange(t0, t0 + steps, device=device), max=last)
        return torch.zeros(steps, dtype=torch.long, device=device)

    def forward(self, x: torch.Tensor, state=None, t0: int = 0):
        steps, batch, _ = x.shape
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features, the packed layer expects "
                             f"{self.input_size}")
        if state is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        w_ih, w_hh = self.matrix("ih"), self.matrix("hh")
        if self.norm in ("none", "weight") and not x.is_cuda and \
                not native.use_native(steps * batch):
            # CPU: unpack both matrices for this call only and run torch's fused LSTM kernel;
            # token by token (steps x batch <= 8) the native kernel in the loop below instead
            weights = [w_ih.unpacked(x.dtype), w_hh.unpacked(x.dtype), self.bias.to(x.dtype),
                       torch.zeros_like(self.bias, dtype=x.dtype)]
            out, h, c = torch._VF.lstm(x, (h.unsqueeze(0), c.unsqueeze(0)), weights, True, 1,
                                       0.0, False, False, False)
            return out, (h.squeeze(0), c.squeeze(0))
        slots = self._slots(t0, steps, x.device)
        px = w_ih.matmul(x.reshape(steps * batch, -1)).reshape(steps, batch, -1)
        if self.norm in ("batch", "power"):
            px = self._normalize("ih", px, slots.unsqueeze(1))
        else:
            px = self._normalize("ih", px, None)
        px = px + self.bias
        hidden = self.hidden_size
        outputs: List[torch.Tensor] = []
        with w_hh.prepared(batch) as recurrent:
            for t in range(steps):
                z = self._normalize("hh", recurrent(h), slots[t])
                gates = px[t] + z
                sig = torch.sigmoid(gates)
                a = torch.tanh(gates[:, 2 * hidden:3 * hidden])
                c = torch.addcmul(sig[:, hidden:2 * hidden] * c, sig[:, :hidden], a)
                h = sig[:, 3 * hidden:] * torch.tanh(c)
                outputs.append(h)
        return torch.stack(outputs), (h, c)


class PackedNQLSTM(nn.Module):
    """Stack of packed layers with the interface of :class:`nq_plugin.nn.NQLSTM` (inference)."""

    def __init__(self, metas: List[Dict[str, object]], norm_steps: int = 1):
        super().__init__()
        if not metas:
            raise PackedFormatError("a packed LSTM needs at least one layer")
        self.layers = nn.ModuleList(PackedNQLSTMLayer(m, norm_steps) for m in metas)
        self.input_size = self.layers[0].input_size
        self.hidden_size = self.layers[0].hidden_size
        self.num_layers = len(metas)

    @classmethod
    def from_lstm(cls, lstm: NQLSTM) -> "PackedNQLSTM":
        packed = [pack_layer(layer) for layer in lstm.layers]
        steps = max((t["ih_affine_scale"].shape[0] for t, _ in packed
                     if "ih_affine_scale" in t), default=1)
        module = cls([meta for _, meta in packed], steps)
        for layer, (tensors, _) in zip(module.layers, packed):
            for key, value in tensors.items():
                getattr(layer, key).copy_(value)
        return module

    def forward(self, x: torch.Tensor, state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                t0: int = 0):
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            x, (h, c) = layer(x, None if state is None else (state[0][i], state[1][i]), t0)
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
