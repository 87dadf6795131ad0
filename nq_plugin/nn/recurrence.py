"""The time loop of a layer/batch/power-normalized LSTM layer, with a hand-written backward.

Forward, for t = 0..T-1, with ``px`` = x W_x^T computed for all steps by one GEMM outside:

    z_t = h_{t-1} W_h^T
    g_t = gain_x * N_x(px_t) + gain_h * N_h(z_t) + shift      (shift = b + both norms' shifts)
    c_t = sigma(i) * tanh(a) + sigma(f) * c_{t-1},   h_t = sigma(o) * tanh(c_t)

Why by hand: on CPU the loop is bound by memory traffic and per-op overhead, not by FLOPs.
Autograd would add every step's full (4H x H) gradient into W_h's accumulator and run ~40 small
graph nodes per step; normalizing the input term for all steps at once costs several passes over
a (T, B, 4H) tensor. Here both terms are normalized inside the step (cache-resident data), the
backward walks the steps once, and dL/dW_h is one GEMM over all steps at the end (as cuDNN does).
Each normalization supplies its per-step statistics and their backward through ``step_stats``
and ``step_backward`` (:mod:`nq_plugin.norm`).
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import torch

from .. import backend
from ..backend import Recurrence, StepGemm
from ..logs import LogOnce
from ..native import build_error as native_build_error
from ..native import extension as native_extension
from .cell import lstm_cell
from .step_products import StepMatmul, step_weights, timed_loop

logger = logging.getLogger(__name__)
_log_once = LogOnce(logger)


def _forward(px, h, c, w_hh, shift, gain_x, gain_h, norm_x, norm_h, t0, keep):
    steps, batch = px.shape[0], px.shape[1]
    hidden = h.shape[1]
    recurrent = StepMatmul(w_hh, batch)
    out = px.new_empty(steps, batch, hidden)
    saved = []
    for t, px_t in enumerate(px.unbind(0)):
        x_hat, x_stats = norm_x.step_stats(px_t, t0 + t)
        z = recurrent(h)
        z_hat, z_stats = norm_h.step_stats(z, t0 + t)
        gates = shift + x_hat if gain_x is None else torch.addcmul(shift, x_hat, gain_x)
        if gain_h is None:
            gates.add_(z_hat)
        else:
            gates.addcmul_(z_hat, gain_h)
        c_prev = c
        h, c, acts, tanh_c = lstm_cell(gates, c_prev, h_out=out[t])
        if keep:
            saved.append((c_prev, px_t, x_hat, x_stats, z, z_hat, z_stats, acts, tanh_c))
    return out, h, c, saved


def _through_gain(dg, gain, grad_gain, y_hat):
    """Backward of gain * y_hat: accumulate dL/dgain, return dL/dy_hat."""
    if gain is None:
        return dg
    grad_gain.add_((dg * y_hat).sum(0))
    return dg * gain


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, px, h0, c0, w_hh, shift, gain_x, gain_h, norm_x, norm_h, t0):
        out, h, c, saved = _forward(px, h0, c0, w_hh, shift, gain_x, gain_h, norm_x, norm_h,
                                    t0, keep=True)
        ctx.norms, ctx.t0, ctx.saved = (norm_x, norm_h), t0, saved
        ctx.save_for_backward(h0, out, w_hh, gain_x, gain_h)
        return out, h, c

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        h0, out, w_hh, gain_x, gain_h = ctx.saved_tensors
        saved, (norm_x, norm_h), t0 = ctx.saved, ctx.norms, ctx.t0
        steps, batch, hidden = out.shape
        gates = 4 * hidden
        grad_px = out.new_empty(steps, batch, gates)
        grad_z = out.new_empty(steps, batch, gates)
        grad_shift = out.new_zeros(gates)
        grad_gain_x = None if gain_x is None else out.new_zeros(gates)
        grad_gain_h = None if gain_h is None else out.new_zeros(gates)
        dh = grad_h.clone() if grad_h is not None else out.new_zeros(batch, hidden)
        dc = grad_c.clone() if grad_c is not None else out.new_zeros(batch, hidden)
        dg = out.new_empty(batch, gates)
        back = StepMatmul(w_hh.t(), batch)  # dL/dh_{t-1} = dL/dz_t W_h
        for t in range(steps - 1, -1, -1):
            c_prev, px_t, x_hat, x_stats, z, z_hat, z_stats, acts, tanh_c = saved[t]
            if grad_out is not None:
                dh = dh + grad_out[t]
            i, f = acts[:, :hidden], acts[:, hidden:2 * hidden]
            a, o = acts[:, 2 * hidden:3 * hidden], acts[:, 3 * hidden:]
            dc = torch.addcmul(dc, dh * o, 1 - tanh_c * tanh_c)
            torch.mul(dc, a, out=dg[:, :hidden])
            torch.mul(dc, c_prev, out=dg[:, hidden:2 * hidden])
            torch.mul(dc, i, out=dg[:, 2 * hidden:3 * hidden])
            torch.mul(dh, tanh_c, out=dg[:, 3 * hidden:])
            # through the activations: sigmoid' = s (1 - s) for i, f, o; tanh' = 1 - a^2 for a
            deriv = acts * (1 - acts)
            torch.addcmul(torch.ones_like(a), a, a, value=-1, out=deriv[:, 2 * hidden:3 * hidden])
            dg.mul_(deriv)
            dc = dc * f
            grad_shift.add_(dg.sum(0))
            d_x_hat = _through_gain(dg, gain_x, grad_gain_x, x_hat)
            grad_px[t] = norm_x.step_backward(d_x_hat, px_t, x_hat, x_stats, t0 + t)
            d_z_hat = _through_gain(dg, gain_h, grad_gain_h, z_hat)
            grad_z[t] = norm_h.step_backward(d_z_hat, z, z_hat, z_stats, t0 + t)
            dh = back(grad_z[t])
        # h_{t-1} for all t: h0 followed by the outputs of steps 0..T-2
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]]).reshape(-1, hidden)
        grad_w = grad_z.reshape(-1, gates).t().mm(h_prev)
        return (grad_px, dh, dc, grad_w, grad_shift, grad_gain_x, grad_gain_h, None, None, None)


class _NativeRecurrence(torch.autograd.Function):
    """The same loop in C++ (``nq_plugin/csrc/recurrence.cpp``), forward and backward. With
    ``w_ih`` (the fused input projection), ``px`` is x (T, B, K) and px = x W_x^T is computed
    inside the loop."""

    @staticmethod
    def forward(ctx, px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0, w_ih=None):
        module = native_extension()
        res = timed_loop(
            "forward", w_hh, px.shape[1], px.shape[0], (form_x.op, form_h.op),
            lambda plan: module.recurrence_forward(px, h0, c0, w_hh, shift, gain_x, gain_h,
                                                   native_term(form_x), native_term(form_h),
                                                   t0, True, w_ih, plan))
        out, h, c = res[:3]  # then c_all, stats_x, stats_h, the z_hat and activation blocks
        ctx.forms, ctx.t0 = (form_x, form_h), t0
        ctx.save_for_backward(px, w_ih, h0, c0, out, w_hh, gain_x, gain_h, *res[3:])
        return out, h, c

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        px, w_ih, h0, c0, out, w_hh, gain_x, gain_h, c_all, stats_x, stats_h, *blocks = \
            ctx.saved_tensors
        z_hat, acts = blocks[:len(blocks) // 2], blocks[len(blocks) // 2:]
        form_x, form_h = ctx.forms
        grads = timed_loop(
            "backward", w_hh.t(), out.shape[1], out.shape[0], (form_x.op, form_h.op),
            lambda plan: native_extension().recurrence_backward(
                grad_out, grad_h, grad_c, px, h0, c0, out, c_all, acts, z_hat, stats_x,
                stats_h, w_hh, gain_x, gain_h, native_term(form_x), native_term(form_h), ctx.t0,
                w_ih, ctx.needs_input_grad[0], plan))
        grad_px, dh0, dc0, grad_w, grad_shift, grad_gain_x, grad_gain_h, grad_w_ih = grads
        return (grad_px if ctx.needs_input_grad[0] else None, dh0, dc0, grad_w, grad_shift,
                None if gain_x is None else grad_gain_x,
                None if gain_h is None else grad_gain_h, None, None, None,
                None if w_ih is None else grad_w_ih)


def native_op(name: str) -> int:
    """The number of the native operation ``name`` (NativeForm.op), as the extension defines
    it (nq_plugin/csrc/native_ops.h, bound as ``native_ops()``)."""
    global _NATIVE_OPS
    if _NATIVE_OPS is None:
        _NATIVE_OPS = dict(native_extension().native_ops())
    try:
        return _NATIVE_OPS[name]
    except KeyError:
        raise ValueError(f"the native recurrence has no operation {name!r}; it has "
                         f"{sorted(_NATIVE_OPS)}") from None


_NATIVE_OPS = None


def native_term(form):
    """A NativeForm as the extension's NormTerm (nq_plugin/csrc/native.h): what the
    recurrence's entry points take for each term."""
    term = native_extension().NormTerm()
    term.op, term.eps, term.momentum = native_op(form.op), float(form.eps), float(form.momentum)
    term.first, term.second, term.nu = form.first, form.second, form.nu
    term.accum_forward, term.accum_backward = form.accum_forward, form.accum_backward
    return term


def native_loop_runs(x: torch.Tensor, forms, dtypes=(torch.float32, torch.float64),
                     quiet: bool = False) -> bool:
    """The one decision whether the native loop runs a call on ``x`` (T, B, F) with the two
    normalizations' native ``forms`` (a form is None where a normalization has none): the
    backend's ``recurrence`` choice (:mod:`nq_plugin.backend`), then the tensors, the forms and
    the extension. ``native`` where it cannot run is an error naming why; ``auto`` logs the
    Python loop's reason once. ``quiet``: only answer (for callers with another fast path)."""
    chosen = backend.current()
    if chosen.recurrence is Recurrence.PYTHON:
        return False
    reason = None
    if x.device.type != "cpu" or x.dtype not in dtypes:
        reason = f"{x.device.type} {x.dtype} tensors"
    elif any(f is None or isinstance(f, _Missing) for f in forms):
        reason = forms_missing(forms)
    elif native_extension() is None:
        reason = f"the native extension did not build ({native_build_error()})"
    if quiet:
        return reason is None
    if reason is not None:
        if chosen.recurrence is Recurrence.NATIVE:
            raise RuntimeError(f"{chosen.label('recurrence')}, but {reason}")
        _log_once(f"python:{reason}", f"nq_plugin: the LSTM loop runs in Python ({reason})")
        return False
    _log_once("native", "nq_plugin: the LSTM loop runs natively (nq_plugin/csrc/recurrence.cpp;"
                        " NQ_PLUGIN_RECURRENCE=python for the Python loop)")
    return True


class _Missing:
    """The reason a normalization has no native form, in place of its form."""

    def __init__(self, norm):
        self.reason = (f"{type(norm).__name__} has no native form in "
                       f"{'training' if norm.training else 'eval'} mode")


def forms_missing(forms) -> str:
    """Why the native loop has no forms to run with."""
    return next(f.reason if isinstance(f, _Missing) else "a normalization has no native form"
                for f in forms if f is None or isinstance(f, _Missing))


def native_forms(batch: int, norm_x, norm_h):
    """The two normalizations' native forms for ``batch`` rows (a _Missing where one has none)."""
    forms = []
    for norm in (norm_x, norm_h):
        form = norm.native_form(batch)
        forms.append(form if form is not None else _Missing(norm))
    return forms


def native_loop_available(x: torch.Tensor, norm_x, norm_h) -> bool:
    """Whether the native loop runs a call on ``x`` (T, B, F; float32) with these
    normalizations -- checked quietly, for callers with another fast path (torch's LSTM)."""
    return native_loop_runs(x, native_forms(x.shape[1], norm_x, norm_h), (torch.float32,),
                            quiet=True)


def native_inference(px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0=0,
                     layout=None):
    """The native loop's forward without autograd for given native forms (a packed model's
    folded normalizations), or None when the native loop is not to run here. ``layout``: W_h
    already in oneDNN's layout (:func:`~nq_plugin.nn.step_products.prepacked`) for px's batch,
    kept by the caller."""
    if not native_loop_runs(px, (form_x, form_h), (torch.float32,)):
        return None
    return _native_forward(px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0, layout)


def _native_forward(px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0, layout=None,
                    w_ih=None):
    """The native forward without autograd (keeps nothing for a backward). W_h is reordered
    into oneDNN's layout for this call unless the caller keeps it (``layout``): at H=2000 the
    reorder of a 64 MB W_h costs more than a step. A caller that keeps a layout calls once a
    step or a batch with the same weights (eval, generation), so its team splits the batch rows
    and reuses it; without one, :func:`~nq_plugin.nn.step_products.step_weights` chooses (the
    per-call copy of W_h a split by columns takes, a long sequence repays). With ``w_ih``, px
    is x (fused projection)."""
    with torch.no_grad():
        out, h, c = native_extension().recurrence_forward(
            px, h0, c0, w_hh, shift, gain_x, gain_h, native_term(form_x), native_term(form_h),
            t0, False, w_ih, step_weights(w_hh, px.shape[1], training=False, layout=layout))
    return out, h, c


# inputs at most this wide have their projection x W_x^T fused into the native loop
# (sequential MNIST: one pixel a step): no (T, B, 4H) px block is written, read, or
# differentiated through a GEMM with K this small
FUSED_INPUT_COLUMNS = 4
# in float32 with the loop's step GEMM, inputs at most this wide too (the char models' 50
# symbols): their px, dL/dx and dL/dW_x are products of the step GEMM or of one GEMM per chunk
# of steps inside the loop (nq_plugin/csrc/recurrence.cpp, InputTerm), and the 52 MB px block of
# the char size and its gradient are never written
FUSED_GEMM_INPUT_COLUMNS = 64
# and one-hot inputs at most this wide (War and Peace's 91 symbols): their px is a copy of one
# row of W_x^T a row and dL/dW_x a sum of rows, no product (InputTerm, one_hot_columns)
FUSED_ONE_HOT_COLUMNS = 256


def fuses_input(x: torch.Tensor, input_weight: torch.Tensor) -> bool:
    """Whether the native loop computes x's projection by ``input_weight`` (W_x, (4H, K))
    itself: K <= FUSED_INPUT_COLUMNS, or, in float32 where the extension has the step GEMM and
    the backend's ``step_gemm`` choice allows it (auto or panels), K <= FUSED_GEMM_INPUT_COLUMNS,
    or K <= FUSED_ONE_HOT_COLUMNS where every row of x is one-hot."""
    columns = x.shape[-1]
    if input_weight.dtype != x.dtype:
        return False
    if columns <= FUSED_INPUT_COLUMNS:
        return True
    if not (columns <= FUSED_ONE_HOT_COLUMNS and x.dtype == torch.float32
            and backend.current().step_gemm in (StepGemm.AUTO, StepGemm.PANELS)
            and native_extension().step_gemm_supported()):
        return False
    return (columns <= FUSED_GEMM_INPUT_COLUMNS
            or native_extension().one_hot_columns(x.detach().reshape(-1, columns)) is not None)


def recurrence(px: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
               shift: torch.Tensor, gain_x: Optional[torch.Tensor],
               gain_h: Optional[torch.Tensor], norm_x, norm_h, t0: int = 0,
               layout: Optional[torch.Tensor] = None,
               input_weight: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the loop; returns (outputs (T, B, H), h_T, c_T). Differentiable w.r.t. px, h0, c0,
    w_hh, shift, the gains and ``input_weight`` (hand-written backward); without autograd it
    keeps nothing. ``layout``: W_h in oneDNN's layout for px's batch, kept by an eval-mode
    caller. ``input_weight``: W_x (4H, K), and then ``px`` is the input x (T, B, K) and
    px = x W_x^T (fused into the native loop where :func:`fuses_input`, else one GEMM).
    Native (C++) where it builds and both normalizations have a native form
    (:meth:`nq_plugin.norm.Normalization.native_form`), else the Python loop."""
    tensors = (px, h0, c0, w_hh, shift, gain_x, gain_h, input_weight)
    needs_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad
                                                 for x in tensors)
    forms = native_forms(px.shape[1], norm_x, norm_h) if px.device.type == "cpu" else (None, None)
    native = native_loop_runs(px, forms)
    if input_weight is not None and not (native and fuses_input(px, input_weight)):
        px, input_weight = torch.nn.functional.linear(px, input_weight), None
    if native:
        if needs_grad:
            return _NativeRecurrence.apply(px, h0, c0, w_hh, shift, gain_x, gain_h, *forms, t0,
                                           input_weight)
        return _native_forward(px, h0, c0, w_hh, shift, gain_x, gain_h, *forms, t0, layout,
                               input_weight)
    if needs_grad:
        return _Recurrence.apply(px, h0, c0, w_hh, shift, gain_x, gain_h, norm_x, norm_h, t0)
    out, h, c, _ = _forward(px, h0, c0, w_hh, shift, gain_x, gain_h, norm_x, norm_h, t0,
                            keep=False)
    return out, h, c
