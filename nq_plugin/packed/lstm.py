"""Packed inference LSTM: computes from packed weight words (1 or 2 bits per weight).

:func:`pack_layer` turns a trained :class:`nq_plugin.nn.NQLSTMLayer` (eval mode) into the tensors
of the packed format (:mod:`nq_plugin.packed.format`): codes and one folded scale per row for
each quantized matrix (fp32 for full-precision ones), the LSTM bias, and each normalization's
inference folding (:meth:`nq_plugin.norm.Normalization.fold`; a kind without one cannot be
packed). :class:`PackedNQLSTMLayer` runs it with the folded normalization's ``apply`` (or its
native and fused-step forms, :class:`nq_plugin.norm.FoldedNorm`) and the one cell of :func:`nq_plugin.nn.cell.lstm_cell`:

    g_t = N_x(s_x * B_x x_t) + N_h(s_h * B_h h_{t-1}) + b

The products B x come from :mod:`nq_plugin.packed.kernels` (the kernel is chosen there, see
:func:`~nq_plugin.packed.kernels.select_kernel`). Normalizations that do not act on the
activations (none, weight) run torch's fused LSTM kernel on CPU for whole sequences (the
matrices decoded once and kept while the buffers are unchanged); generation steps and short
calls compute from the words: one fused kernel per step, on the GPU where the folded
normalization is a per-feature affine map, on the CPU for layer norm too.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .. import backend
from ..derived import DerivedCache
from ..nn.cell import lstm_cell
from ..nn.lstm import NQLSTM, NQLSTMLayer
from ..nn.recurrence import native_inference
from ..nn.step_products import prepacked
from ..norm import FoldedNorm, normalization_class
from .format import (PRODUCTS, PackedFormatError, layer_shapes, pack_matrix, plane_names,
                     split_codes, tensor_dtype)
from .kernels import PackedMatrix, select_kernel, triton_lstm_step
from .kernels import native as native_kernel

logger = logging.getLogger(__name__)


@torch.no_grad()
def pack_layer(layer: NQLSTMLayer) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Packed tensors and layer metadata of a trained layer (evaluated in eval mode). Raises
    :class:`nq_plugin.norm.FoldingNotSupported` for a normalization without inference folding
    and :class:`PackedFormatError` when the folded matrix would not reproduce the layer's."""
    was_training = layer.training
    layer.eval()
    try:
        # what every eval forward does first (PowerNorm folds its last training statistics)
        layer.ih_norm.begin_forward()
        layer.hh_norm.begin_forward()
        effective = layer.effective_weights()
        quantized = layer.quantized_weights()
        tensors: Dict[str, torch.Tensor] = {}
        meta: Dict[str, object] = {"input_size": layer.input_size, "hidden_size": layer.hidden_size,
                                   "quantizer": layer.quantizer_name, "norm": layer.norm_name}
        quantizers = (layer.ih_quantizer, layer.hh_quantizer)
        norms = (layer.ih_norm, layer.hh_norm)
        for name, quantizer, norm, w_q, w_eff in zip(PRODUCTS, quantizers, norms, quantized,
                                                      effective):
            for key, value in norm.fold().tensors.items():
                tensors[f"{name}_{key}"] = value
            bits = quantizer.bits
            meta[f"{name}_bits"] = bits
            if bits == 32:
                tensors[f"{name}_weight"] = w_eff.detach().float().contiguous()
                continue
            codes, _ = split_codes(w_q.detach(), bits)
            for plane, words in pack_matrix(codes, bits).items():
                tensors[f"{name}_{plane}"] = words
            # folded per-row scale: w_eff_j = s_j * codes_j (quantizer scale x what the
            # normalization does to the weight, e.g. weight norm's g_j / ||W_q,j||)
            scale = (w_eff * codes).sum(1) / (codes * codes).sum(1).clamp_min(1)
            if not torch.allclose(scale.unsqueeze(1) * codes, w_eff, rtol=1e-5, atol=1e-6):
                raise PackedFormatError(
                    f"normalization {layer.norm_name!r} changes the weight in a way that is not "
                    "a per-row scale of the quantized matrix: it cannot be folded into the "
                    "packed format")
            tensors[f"{name}_scale"] = scale.float()
        tensors["bias"] = layer.bias.detach().float().clone()
        return tensors, meta
    finally:
        layer.train(was_training)


class PackedNQLSTMLayer(nn.Module):
    """One packed LSTM layer; buffers as produced by :func:`pack_layer`. ``activations``: the
    token-by-token CPU step's recurrent activations, "fp32" (exact) or "int8" (faster, inexact;
    :mod:`nq_plugin.packed.kernels.native`), None for ``NQ_PLUGIN_ACTIVATIONS``."""

    activations: Optional[str] = None

    def __init__(self, meta: Dict[str, object], norm_steps: int = 1):
        super().__init__()
        self.meta = dict(meta)
        self.input_size = int(meta["input_size"])
        self.hidden_size = int(meta["hidden_size"])
        self.norm_class = normalization_class(str(meta["norm"]))
        self.folded_keys = tuple(self.norm_class.folded_shapes(4 * self.hidden_size, norm_steps))
        for key, shape in layer_shapes(meta, norm_steps).items():
            self.register_buffer(key, torch.zeros(shape, dtype=tensor_dtype(key)))

    def matrix(self, name: str) -> PackedMatrix:
        bits = int(self.meta[f"{name}_bits"])
        cols = self.input_size if name == "ih" else self.hidden_size
        if bits == 32:
            return PackedMatrix.dense(getattr(self, f"{name}_weight"))
        planes = {p: getattr(self, f"{name}_{p}") for p in plane_names(bits)}
        return PackedMatrix(planes, getattr(self, f"{name}_scale"), bits, cols)

    def folded(self, name: str) -> FoldedNorm:
        """The folded normalization of product ``name`` (ih or hh), from the buffers."""
        return self.norm_class.folded_from(
            {key: getattr(self, f"{name}_{key}") for key in self.folded_keys})

    @property
    def derived(self) -> DerivedCache:
        """What the layer derives from its buffers and keeps (decoded matrices, oneDNN layouts,
        the fused step's plan): :class:`nq_plugin.derived.DerivedCache`."""
        cache = self.__dict__.get("_derived")
        if cache is None:
            cache = self.__dict__["_derived"] = DerivedCache()
        return cache

    def _cached(self, name: str, key, build):
        """``build()``, kept under ``name`` while ``key`` and the buffers are unchanged."""
        return self.derived.get(self, name, key, build)

    def _decoded(self, matrix: PackedMatrix, name: str, dtype) -> torch.Tensor:
        """diag(s) B as a dense matrix for the sequence paths (torch's fused LSTM, the native
        loop), decoded once and kept while the buffers are unchanged -- as the unpacked model
        keeps its quantized weights in eval mode, so that oneDNN reuses its reordered copy.
        A call decodes it anyway, so peak memory does not grow; generation steps compute from
        the words and decode nothing."""
        return self._cached(name, dtype, lambda: matrix.unpacked(dtype))

    def _native(self, px, h, c, w_hh, folded_ih, folded_hh, t0):
        forms = (folded_ih.native(), folded_hh.native())
        if forms[0] is None or forms[1] is None:
            return None
        (form_x, gain_x, shift_x), (form_h, gain_h, shift_h) = forms
        shift = self.bias
        for s in (shift_x, shift_h):
            if s is not None:
                shift = shift + s
        w = self._decoded(w_hh, "hh", px.dtype)
        # W_h in oneDNN's layout for this batch, kept like the decoded matrix (a call made one
        # anyway)
        layout = self._cached("hh_layout", (px.dtype, px.shape[1]),
                              lambda: prepacked(w, px.shape[1]))
        return native_inference(px.contiguous(), h.contiguous(), c.contiguous(), w, shift,
                                gain_x, gain_h, form_x, form_h, t0, layout)

    def _fused_tables(self, w_ih: PackedMatrix, w_hh: PackedMatrix, layer_norm: bool):
        """(ax, ah, shift, ln_x, ln_h) for the fused step -- gates = ax * N_x(B_x x) +
        ah * N_h(B_h h) + shift at statistics slot S' = min(t, S - 1), ax, ah, shift (S, 4H) --
        or None when a matrix is dense or the folded normalization is neither a per-feature
        affine map (N: identity, ln None) nor, where ``layer_norm`` (the native step), a layer
        norm (ln = (per-row scale, eps): N standardizes scale * B y per gate block, ax / ah are
        its gain)."""
        if w_ih.bits == 32 or w_hh.bits == 32:
            return None
        tables = []
        for name, matrix in (("ih", w_ih), ("hh", w_hh)):
            terms = self.folded(name).fused_step_terms(matrix.scale, layer_norm)
            if terms is None:
                return None
            tables.append(terms)
        (ax, shift_x, ln_x), (ah, shift_h, ln_h) = tables
        slots = max(ax.shape[0], ah.shape[0])
        shift = (self.bias + shift_x + shift_h).expand(slots, -1)
        return (ax.expand(slots, -1).float().contiguous(), ah.expand(slots, -1).float().contiguous(),
                shift.float().contiguous(), ln_x, ln_h)

    def _fused_plan(self, device: torch.device, activations: str = "fp32"):
        """What every fused step needs, derived once from the buffers: (step, largest batch or
        None for any, whole sequences too, slots) with step(x, h, c, ax, ah, shift, h_out) ->
        (h, c) and slots[t] = (ax, ah, shift) of statistics slot t; None where no fused kernel applies (PyTorch kernel chosen, a dense
        matrix, layer norm on the GPU)."""
        w_ih, w_hh = self.matrix("ih"), self.matrix("hh")
        kernel = select_kernel(w_hh, device, 1)
        if kernel not in ("triton", "native"):
            return None
        tables = self._fused_tables(w_ih, w_hh, layer_norm=kernel == "native")
        if tables is None:
            return None
        ax, ah, shift, ln_x, ln_h = tables
        ih, hh = (w_ih.planes, w_ih.bits), (w_hh.planes, w_hh.bits)
        if kernel == "triton":
            fused = triton_lstm_step()
            if fused is None:
                return None

            def step(x, h, c, ax, ah, shift, h_out=None):
                return fused(x, h, c, ih, hh, ax, ah, shift, h_out=h_out)
            largest = None
        else:
            q8 = native_kernel.q8_layout(*hh) if activations == "int8" else None
            step = native_kernel.lstm_stepper(ih, hh, ln_x, ln_h, q8)
            largest = native_kernel.largest_native_batch()
        # sequences beyond the GEMV's rows: torch's fused LSTM (none / weight) and the native
        # loop on the decoded matrix (layer norm) are faster than a step per time step
        sequences = self.norm_class.acts_on_activations and ln_x is None and ln_h is None
        slots = [(ax[s], ah[s], shift[s]) for s in range(ax.shape[0])]  # views, made once
        return step, largest, sequences, slots

    def _plan(self, x):
        """The fused step's plan (:meth:`_fused_plan`) for ``x``'s device and the backend's
        choices, kept while the buffers are unchanged."""
        chosen = backend.current()  # once a call: a generation step is short
        mode = self.activations or chosen.activations.value
        return self._cached("fused", (x.device, chosen.packed_kernel, mode, chosen.lookup),
                            lambda: self._fused_plan(x.device, mode))

    def token_step(self, x: torch.Tensor, state, t0: int = 0):
        """A generation step of a one-layer model in its shapes -- x (1, B, K) float32 on the
        CPU, state (h, c) each (1, B, H) or None -- by the native fused step's one call:
        (output, (h, c)), each (1, B, H); None where that step does not apply (then
        :meth:`forward`)."""
        if x.shape[0] != 1 or x.shape[-1] != self.input_size or x.dtype != torch.float32 or \
                x.is_cuda:
            return None
        plan = self._plan(x)
        if plan is None or not hasattr(plan[0], "token"):
            return None
        step, largest, _, slots = plan
        if largest is not None and x.shape[1] > largest:
            return None
        if state is None:
            zeros = x.new_zeros(1, x.shape[1], self.hidden_size)
            state = (zeros, zeros)
        elif state[0].dtype != torch.float32 or state[1].dtype != torch.float32:
            return None
        return step.token(x, state[0], state[1], *slots[min(t0, len(slots) - 1)])

    def _fused_forward(self, x, h, c, t0):
        """Every step one fused kernel -- Triton on a GPU, the native extension on the CPU for
        the GEMV's batch sizes: both products from the words, the folded normalization, the
        bias, the gates and the cell update -- or None when not applicable. The plan (kernel,
        tables) is kept while the buffers are unchanged: a generation step costs one call."""
        plan = self._plan(x)
        if plan is None:
            return None
        step, largest, sequences, slots = plan
        steps, batch = x.shape[0], x.shape[1]
        if largest is not None and (batch > largest or (
                not sequences and steps * batch > largest)):
            return None  # larger batches, or a sequence with a faster path (see _fused_plan)
        last = len(slots) - 1
        if steps == 1 and not x.is_cuda:  # a generation step on the CPU: no output buffer
            h, c = step(x[0], h, c, *slots[min(t0, last)])
            return h.unsqueeze(0).clone(), (h, c)
        out = x.new_empty(steps, batch, self.hidden_size)
        for t in range(steps):
            h, c = step(x[t], h, c, *slots[min(t0 + t, last)], h_out=out[t])
        return out, (h, c)

    def forward(self, x: torch.Tensor, state=None, t0: int = 0):
        steps, batch, _ = x.shape
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features, the packed layer expects "
                             f"{self.input_size}")
        if state is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        fused = self._fused_forward(x, h, c, t0)
        if fused is not None:
            return fused
        w_ih, w_hh = self.matrix("ih"), self.matrix("hh")
        if not self.norm_class.acts_on_activations and not x.is_cuda and \
                select_kernel(w_hh, x.device, steps * batch) == "torch":
            # both matrices decoded (kept between calls, see _decoded) and torch's fused LSTM
            weights = [self._decoded(w_ih, "ih", x.dtype), self._decoded(w_hh, "hh", x.dtype),
                       self.bias.to(x.dtype),
                       torch.zeros_like(self.bias, dtype=x.dtype)]
            out, h, c = torch._VF.lstm(x, (h.unsqueeze(0), c.unsqueeze(0)), weights, True, 1,
                                       0.0, False, False, False)
            return out, (h.squeeze(0), c.squeeze(0))
        folded_ih, folded_hh = self.folded("ih"), self.folded("hh")
        px = w_ih.matmul(x.reshape(steps * batch, -1)).reshape(steps, batch, -1)
        if not x.is_cuda and select_kernel(w_hh, x.device, steps * batch) == "torch":
            # a sequence: W_h decoded once for this call and the native loop (one GEMM per step)
            # beats a GEMV from the words per step
            native = self._native(px, h, c, w_hh, folded_ih, folded_hh, t0)
            if native is not None:
                out, h, c = native
                return out, (h, c)
        px = folded_ih.apply(px, t0) + self.bias
        outputs: List[torch.Tensor] = []
        with w_hh.prepared(batch) as recurrent:
            for t in range(steps):
                h, c, _, _ = lstm_cell(px[t] + folded_hh.apply(recurrent(h), t0 + t), c)
                outputs.append(h)
        return torch.stack(outputs), (h, c)


class PackedNQLSTM(nn.Module):
    """Stack of packed layers with the interface of :class:`nq_plugin.nn.NQLSTM` (inference).
    ``norm_steps``: time steps of folded per-step statistics (1 unless batch norm keeps them
    per step)."""

    def __init__(self, metas: List[Dict[str, object]], norm_steps: int = 1):
        super().__init__()
        if not metas:
            raise PackedFormatError("a packed LSTM needs at least one layer")
        self.layers = nn.ModuleList(PackedNQLSTMLayer(m, norm_steps) for m in metas)
        self.input_size = self.layers[0].input_size
        self.hidden_size = self.layers[0].hidden_size
        self.num_layers = len(metas)
        self.norm_steps = norm_steps

    @property
    def metas(self) -> List[Dict[str, object]]:
        return [layer.meta for layer in self.layers]

    def set_activations(self, mode: Optional[str]) -> "PackedNQLSTM":
        """Every layer's token-by-token CPU step with ``mode`` activations: "fp32" (exact),
        "int8" (faster, inexact), or None to follow ``NQ_PLUGIN_ACTIVATIONS``."""
        if mode is not None:
            native_kernel.check_activation_mode(mode, "activations")
        for layer in self.layers:
            layer.activations = mode
        return self

    @classmethod
    def from_lstm(cls, lstm: NQLSTM) -> "PackedNQLSTM":
        packed = [pack_layer(layer) for layer in lstm.layers]
        steps = max(norm.statistics_steps() for layer in lstm.layers
                    for norm in (layer.ih_norm, layer.hh_norm))
        module = cls([meta for _, meta in packed], steps)
        for layer, (tensors, _) in zip(module.layers, packed):
            for key, value in tensors.items():
                getattr(layer, key).copy_(value)
        return module

    def forward(self, x: torch.Tensor, state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                t0: int = 0):
        if len(self.layers) == 1 and x.shape[0] == 1:  # a generation step: one native call
            token = self.layers[0].token_step(x, state, t0)
            if token is not None:
                return token
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            x, (h, c) = layer(x, None if state is None else (state[0][i], state[1][i]), t0)
            hs.append(h)
            cs.append(c)
        if len(hs) == 1:  # a view, no copy (a generation step is a few kernels in all)
            return x, (hs[0].unsqueeze(0), cs[0].unsqueeze(0))
        return x, (torch.stack(hs), torch.stack(cs))
