"""The normalized, quantized LSTM (Hou et al., "Normalization Helps Training of Quantized LSTM",
NeurIPS 2019).

Per layer and time step, with gates i, f, a (candidate), o:

    [i f a o]_t = N_x(Q(W_x) x_t) + N_h(Q(W_h) h_{t-1}) + b
    c_t = sigma(i) * tanh(a) + sigma(f) * c_{t-1},   h_t = sigma(o) * tanh(c_t)

Q quantizes each of the 4 gate blocks of W_x and W_h separately (8 scales per layer); N is one
of the normalizations of :mod:`nq_plugin.norm`. Two execution paths give the same result:

* ``none`` / ``weight``: N only rewrites the matrix, so the quantized, normalized weights are
  materialized once per forward and PyTorch's fused LSTM kernel runs (in training the native
  loop, where it runs: faster);
* ``layer`` / ``batch`` / ``power``: the input term is one GEMM over all steps, normalized
  vectorized; only the recurrent term is stepped in a loop.
"""
from __future__ import annotations

import math
import weakref
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..derived import DerivedCache
from ..norm import NormOptions, build_normalization
from ..quant import build_quantizer
from .cell import lstm_cell
from .recurrence import native_loop_available, recurrence
from .step_products import prepacked

State = Tuple[torch.Tensor, torch.Tensor]
#: ``observer(t, z, h, c)``: called at every step of an observed forward with the step index
#: (inside the window), the recurrent term z = W_h h_{t-1} before normalization, and the new
#: h_t (part of the autograd graph), c_t. The gradient diagnostics (``nq_plugin.diagnostics``)
#: are such an observer; ``nn`` knows nothing about them.
StepObserver = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _dead_layer_ref() -> "LayerRef":
    ref = LayerRef.__new__(LayerRef)
    ref._ref = None
    return ref


class LayerRef:
    """A weak reference to the layer owning a weight, which (unlike ``weakref.ref``) pickles:
    as an empty reference, re-made by the layer when it is unpickled (``torch.save(module)``)."""

    def __init__(self, layer):
        self._ref = weakref.ref(layer)

    def __call__(self):
        return None if self._ref is None else self._ref()

    def __reduce__(self):
        return (_dead_layer_ref, ())


class NQLSTMLayer(nn.Module):
    """One normalized, quantized LSTM layer (time-major input (T, B, input_size)); the options
    are those of :class:`nq_plugin.nn.options.LSTMOptions`. The layer picks the executor of
    :func:`nq_plugin.nn.cell.lstm_cell`: the loop with the hand-written backward
    (:mod:`nq_plugin.nn.recurrence`; none / weight norm too in training where its native form
    runs), torch's fused kernel (none / weight norm otherwise), or the autograd loop (reference;
    used when a step observer is given)."""

    # Eval without autograd, none / weight norm: single steps (generation, streaming) take the
    # native loop with W_h kept in oneDNN's layout (with the cached weights) instead of torch's
    # fused LSTM, which reorders its weights every call (bc + weight, one step: H=512 0.23 vs
    # 0.44 ms; H=2000 4.1 vs 32 ms; benchmarks/eval_paths.py). Longer calls stay with torch's
    # LSTM: faster for sequences (T=100 x 8 rows, H=512: 15 vs 19 ms), and the same arithmetic
    # whatever the segment length -- an unnormalized binary LSTM amplifies a rounding
    # difference ~2.5x per step, so eval-lm in segments of 7 steps vs one pass differed by 2e-3
    # in loss when short segments took the loop.

    def __init__(self, input_size: int, hidden_size: int, quantizer: str = "fp",
                 norm: str = "none", quantize_input: bool = True,
                 latent_clip: Optional[float] = None, **norm_options):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got "
                             f"input_size={input_size}, hidden_size={hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias = nn.Parameter(torch.empty(gates))
        self.ih_quantizer = build_quantizer(quantizer if quantize_input else "fp",
                                            latent_clip=latent_clip)
        self.hh_quantizer = build_quantizer(quantizer, latent_clip=latent_clip)
        options = NormOptions.from_kwargs(**norm_options)
        self.ih_norm = build_normalization(norm, gates, options)
        self.hh_norm = build_normalization(norm, gates, options)
        self.quantizer_name = quantizer
        self.norm_name = norm
        self.quantize_input = quantize_input
        self.second_moment_source = None
        self._tag_weights()
        self.force_loop = False  # run the per-step loop even for none/weight (tests, benchmarks)
        self.loop_impl = "manual"  # "manual": hand-written backward; "autograd": reference
        self.reset_parameters()

    def _tag_weights(self) -> None:
        """Tags read by the fairseq optimizers (nq_plugin.optim): the learning-rate scale of the
        latent weights that the quantizer declares (the paper's 2/a = 2 sqrt(H) for
        BinaryConnect/TerConnect), and the owning layer. Re-applied after unpickling and
        ``copy.deepcopy`` (which drops a Parameter's attributes)."""
        for _, weight, q in self.latent_weights():
            weight.nq_latent_scale = q.latent_lr_scale(self.hidden_size)
            weight.nq_layer = LayerRef(self)

    def latent_weights(self):
        """(name, latent weight, its quantizer) of the layer's two quantized weights: what the
        optimizers' tags and the compact storage (:mod:`nq_plugin.storage`) pair up."""
        return (("weight_ih", self.weight_ih, self.ih_quantizer),
                ("weight_hh", self.weight_hh, self.hh_quantizer))

    @property
    def derived(self) -> DerivedCache:
        """What the eval-mode forward derives from the parameters and keeps (the quantized
        weights, W_h in oneDNN's layout): :class:`nq_plugin.derived.DerivedCache`."""
        cache = self.__dict__.get("_derived")
        if cache is None:
            cache = self.__dict__["_derived"] = DerivedCache()
        return cache

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_parameters" in state:
            self._tag_weights()

    @property
    def uses_loop(self) -> bool:
        return (self.force_loop or self.ih_norm.acts_on_activations
                or self.hh_norm.acts_on_activations)

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) as torch's LSTM; weight-norm gains from the row norms."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(p, -bound, bound)
        self.init_norms_from_weights()

    def init_norms_from_weights(self) -> None:
        """Re-derive weight-norm gains from the current latent weights (after a custom init)."""
        self.ih_norm.init_from_weight(self.weight_ih.detach())
        self.hh_norm.init_from_weight(self.weight_hh.detach())

    def set_second_moment_source(self, source) -> None:
        """Install the callable param -> second moment used by the ``lab``/``lat`` quantizers."""
        self.second_moment_source = source

    def _quantize(self, quantizer, weight):
        moment = None
        if quantizer.uses_second_moment and self.training:  # eval reuses the stored scale
            if self.second_moment_source is not None:
                moment = self.second_moment_source(weight)
            else:
                raise RuntimeError(
                    f"quantizer {quantizer.name!r} needs the optimizer's second moment but none "
                    "is attached: call nq_plugin.quant.attach_optimizer(model, optimizer) with an "
                    "Adam-type optimizer before training (with fairseq-train: --optimizer nq_adam)")
        return quantizer(weight, moment)

    def train(self, mode: bool = True):
        """Switching mode (``train()`` / ``eval()``) drops the cached inference weights."""
        self.clear_weight_cache()
        return super().train(mode)

    def clear_weight_cache(self) -> None:
        """Drop the cached eval-mode weights. Needed only after changing parameters through
        ``.data`` (which bypasses the version counters the cache checks) while staying in eval
        mode; optimizer steps, ``load_state_dict``, ``.to()`` and mode switches are detected."""
        self.derived.clear()

    def effective_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Quantized (and, for weight norm, normalized) W_x and W_h used by the forward pass.

        In eval mode without autograd (inference, generation) they are computed once and reused
        until a parameter or buffer changes or the mode does; in training always recomputed."""
        if self.training or torch.is_grad_enabled():
            self.derived.clear()
            return self._compute_effective_weights()
        return self.derived.get(self, "weights", None, self._compute_effective_weights)

    def _recurrent_layout(self, w_hh: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
        """The cached eval W_h in oneDNN's layout for ``batch`` rows (the native loop's step
        product), kept with the cached weights for the last batch size asked; None where
        nothing is cached (training, autograd) or oneDNN cannot."""
        weights = self.derived.peek("weights")
        if weights is None or weights[1] is not w_hh:
            return None
        # one batch size at a time: a copy of W_h each
        return self.derived.get(self, "hh_layout", batch, lambda: prepacked(w_hh, batch))

    def quantized_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Quantized W_x and W_h before normalization (what the packer encodes)."""
        return (self._quantize(self.ih_quantizer, self.weight_ih),
                self._quantize(self.hh_quantizer, self.weight_hh))

    def _compute_effective_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        w_ih, w_hh = self.quantized_weights()
        return self.ih_norm.weight(w_ih), self.hh_norm.weight(w_hh)

    def forward(self, x: torch.Tensor, state: Optional[State] = None, t0: int = 0,
                observer: Optional[StepObserver] = None) -> Tuple[torch.Tensor, State]:
        """x: (T, B, input_size); state: (h0, c0), each (B, H); ``t0`` is the index of the first
        step inside the BPTT window (per-step batch-norm statistics); ``observer``, when given,
        is called at every step (:data:`StepObserver`; runs the autograd loop). Returns
        (T, B, H), (h, c)."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"input has shape {tuple(x.shape)}; this LSTM layer expects "
                             f"(T, B, {self.input_size}) (input_size={self.input_size})")
        batch = x.shape[1]
        if state is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            state = (zeros, zeros)
        else:
            for name, s in zip(("h0", "c0"), state):
                if s.shape != (batch, self.hidden_size):
                    raise ValueError(f"initial state {name} has shape {tuple(s.shape)}, expected "
                                     f"({batch}, {self.hidden_size}) (batch, hidden_size)")
        self.ih_norm.begin_forward()
        self.hh_norm.begin_forward()
        w_ih, w_hh = self.effective_weights()
        if observer is not None or (self.uses_loop and self.loop_impl == "autograd"):
            return self._loop_autograd(x, state, w_ih, w_hh, t0, observer)
        # eval without autograd: W_h's oneDNN layout kept with the cached weights
        inference = not self.training and not torch.is_grad_enabled()
        if self.uses_loop:
            layout = self._recurrent_layout(w_hh, x.shape[1]) if inference else None
            return self._loop(x, state, w_ih, w_hh, t0, layout)
        # training, none / weight norm: the native loop and its hand-written backward, where it
        # runs, faster than torch's fused LSTM and its autograd (bc + weight at the word size
        # 1.01-1.02x nn.LSTM against 0.90-0.91x, sequential MNIST 1.27-1.28x against 1.00x;
        # benchmarks/README.md, 2026-12-08)
        if torch.is_grad_enabled() and native_loop_available(x, self.ih_norm, self.hh_norm):
            return self._loop(x, state, w_ih, w_hh, t0)
        if inference and x.shape[0] == 1 and native_loop_available(x, self.ih_norm, self.hh_norm):
            layout = self._recurrent_layout(w_hh, x.shape[1])
            if layout is not None:
                return self._loop(x, state, w_ih, w_hh, t0, layout)
        return self._fused(x, state, w_ih, w_hh)

    def _fused(self, x, state, w_ih, w_hh):
        h0, c0 = state
        weights = [w_ih, w_hh, self.bias, torch.zeros_like(self.bias)]
        out, h, c = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, True, 1, 0.0,
                                   self.training, False, False)
        return out, (h.squeeze(0), c.squeeze(0))

    def _loop(self, x, state, w_ih, w_hh, t0, layout=None):
        h0, c0 = state
        gain_x, shift_x = self.ih_norm.affine()
        gain_h, shift_h = self.hh_norm.affine()
        shift = self.bias
        for s in (shift_x, shift_h):
            if s is not None:
                shift = shift + s
        out, h, c = recurrence(x, h0, c0, w_hh, shift, gain_x, gain_h, self.ih_norm,
                               self.hh_norm, t0, layout, input_weight=w_ih)
        return out, (h, c)

    def _loop_autograd(self, x, state, w_ih, w_hh, t0, observer=None):
        """Reference implementation of :func:`recurrence`: the normalizations' own ``sequence``
        and ``step`` under plain autograd (slower), with an optional step observer."""
        h, c = state
        px = self.ih_norm.sequence(F.linear(x, w_ih), t0) + self.bias
        w_hh_t = w_hh.t()
        outputs: List[torch.Tensor] = []
        # unbind(0), not px[t]: indexing makes each step's backward add a full (T, B, 4H) zero
        # gradient
        for t, px_t in enumerate(px.unbind(0)):
            z = torch.mm(h, w_hh_t)
            h, c, _, _ = lstm_cell(px_t + self.hh_norm.step(z, t0 + t), c)
            if observer is not None:
                observer(t0 + t, z, h, c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, quantizer={self.quantizer_name}, "
                f"norm={self.norm_name}, quantize_input={self.quantize_input}")


class NQLSTM(nn.Module):
    """Stack of :class:`NQLSTMLayer` with dropout between layers, interface like torch.nn.LSTM:
    ``output, (h_n, c_n) = lstm(x, (h_0, c_0))`` with h/c of shape (num_layers, B, H).

    Args: input_size, hidden_size, num_layers, dropout (between layers), quantize_input (False
    keeps W_x full precision, e.g. scalar pixel inputs), batch_first, and the fields of
    :class:`nq_plugin.nn.options.LSTMOptions` (quantizer, norm, latent_clip and the
    normalization options, each documented there). Any other keyword is an error naming the
    valid ones.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, quantizer: str = "fp", norm: str = "none",
                 quantize_input: bool = True, latent_clip: Optional[float] = None,
                 batch_first: bool = False, **norm_options):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.batch_first = batch_first
        self.layers = nn.ModuleList(
            NQLSTMLayer(input_size if i == 0 else hidden_size, hidden_size, quantizer, norm,
                        quantize_input=quantize_input if i == 0 else True,
                        latent_clip=latent_clip, **norm_options)
            for i in range(num_layers))

    def forward(self, x: torch.Tensor, state: Optional[State] = None, t0: int = 0,
                observer: Optional[Callable[[int, "NQLSTMLayer"], Optional[StepObserver]]] = None
                ) -> Tuple[torch.Tensor, State]:
        """``observer(layer_index, layer)``, when given, returns the :data:`StepObserver` of
        that layer for this forward (or None), e.g. the gradient recorder of
        :mod:`nq_plugin.diagnostics`."""
        if x.dim() != 3:
            raise ValueError(f"input must be 3-D (T, B, F) or (B, T, F) with batch_first, "
                             f"got shape {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features but the LSTM was built with "
                             f"input_size={self.input_size}")
        if state is not None:
            h0, c0 = state
            expected = (self.num_layers, x.shape[1], self.hidden_size)
            if h0.shape != expected or c0.shape != expected:
                raise ValueError(f"initial state has shapes {tuple(h0.shape)}, {tuple(c0.shape)};"
                                 f" expected {expected} (num_layers, batch, hidden_size)")
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            layer_state = None if state is None else (state[0][i], state[1][i])
            step_observer = None if observer is None else observer(i, layer)
            x, (h, c) = layer(x, layer_state, t0, observer=step_observer)
            hs.append(h)
            cs.append(c)
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (torch.stack(hs), torch.stack(cs))
