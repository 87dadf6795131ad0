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

import functools
import logging
import time
from typing import List, Optional, Tuple

import torch

from .. import backend
from ..backend import Recurrence
from ..logs import LogOnce
from ..native import build_error as native_build_error
from ..native import extension as native_extension
from .cell import lstm_cell

logger = logging.getLogger(__name__)
_log_once = LogOnce(logger)


def _mkldnn_ok(w: torch.Tensor) -> bool:
    return (w.device.type == "cpu" and w.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def prepacked(weight: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """``weight`` reordered into oneDNN's blocked layout for products with ``batch`` rows, or
    None where oneDNN cannot (the callers then use a plain GEMM)."""
    if not _mkldnn_ok(weight):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), batch)
    except RuntimeError:  # an op signature of another torch version: exact fallback
        return None


# A team of one thread's step GEMMs (h W_h^T forward, grad_z W_h backward; a team of several
# splits them by columns with plain GEMMs, team_splits_columns) go through oneDNN's reordered
# layout only from this hidden size on (measured when the team split the batch rows): at H=100 (sequential
# MNIST, 50 rows a thread) plain mm is faster (the training step 5-8 % faster), at H=300
# (PTB word, 10 rows a thread) oneDNN is (plain mm 6-9 % slower); AMD EPYC, 2 threads,
# benchmarks/step_gemm_layout.py
TRAINING_LAYOUT_MIN_HIDDEN = 192


# From this hidden size on, a team of several threads (torch's intra-op threads, at most one
# per batch row: recurrence.cpp's ``team_size``) splits each step product by its output
# columns, the whole batch's rows at once, with plain GEMMs: each thread then reads its part of
# W_h at a step instead of all of it (alone, 10 rows of x W^T at PTB word's size ran 1.4x
# slower than 20 rows of half the columns; AMD EPYC Zen 3). Below, W_h fits a core's cache
# whole (160 KB at H=100, sequential MNIST) and the team splits the batch rows, without the two
# barriers a step the column split takes.
COLUMN_SPLIT_MIN_HIDDEN = 192


def team_splits_columns(batch: int, hidden: int) -> bool:
    """Whether the native loop's team splits the step products by columns: a team of several
    threads, as ``backend.current().step_split`` says (``auto``: from
    :data:`COLUMN_SPLIT_MIN_HIDDEN` on)."""
    if min(torch.get_num_threads(), batch) < 2:
        return False
    split = backend.current().step_split
    if split is backend.StepSplit.AUTO:
        return hidden >= COLUMN_SPLIT_MIN_HIDDEN
    return split is backend.StepSplit.COLUMNS


# A thread's part of a split step product goes through oneDNN's layout where that measures at
# least this much faster than plain mm on this CPU for the part's shape (the part's product is
# then copied into the whole batch's; the margin keeps a timing near 1 from flipping between
# processes): at PTB word's size plain mm is 1.1-1.2x faster on AMD EPYC Zen 3, the layout
# 1.1x (H=300) to 1.35x (H=650) on Zen 4 (benchmarks/step_gemm_split.py)
PART_LAYOUT_MARGIN = 1.1


def _best_time(fn, rounds: int = 7, calls: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def part_layout_speedup(rows: int, inner: int, cols: int) -> float:
    """Plain mm's time over oneDNN's layout's for one thread's part of a split step product
    (``rows`` x ``inner`` . ``inner`` x ``cols``, on one thread as inside the team), best of 7
    rounds of 20; 0 where oneDNN cannot. Timed once a process per shape (milliseconds at the
    paper's sizes), logged."""
    weight = torch.randn(cols, inner)
    packed = prepacked(weight, rows)
    if packed is None:
        return 0.0
    x, w_t, out = torch.randn(rows, inner), weight.t().contiguous(), torch.empty(rows, cols)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = _best_time(lambda: torch.mm(x, w_t, out=out))
        layout = _best_time(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none",
                                                                        [], ""))
    finally:
        torch.set_num_threads(threads)
    speedup = plain / layout
    logger.info("nq_plugin: a split step product's part %dx%d.%dx%d through oneDNN's layout: "
                "%.2fx plain mm (%s at %.2f)", rows, inner, inner, cols, speedup,
                "taken" if speedup >= PART_LAYOUT_MARGIN else "not taken", PART_LAYOUT_MARGIN)
    return speedup


def part_bounds(n: int, parts: int) -> List[Tuple[int, int]]:
    """The team's split of n rows or columns, as recurrence.cpp's ``rows_of``: the first
    ``n % parts`` parts one longer."""
    per, extra = divmod(n, parts)
    bounds, begin = [], 0
    for p in range(parts):
        end = begin + per + (1 if p < extra else 0)
        bounds.append((begin, end))
        begin = end
    return bounds


def part_layouts(weight: torch.Tensor, batch: int) -> List[torch.Tensor]:
    """For a split step product x weight^T (``weight`` (N, K), its rows the product's columns):
    each team thread's rows of ``weight`` in oneDNN's layout for the whole batch, where the
    layout measures faster than plain mm here (:func:`part_layout_speedup`); else [] (plain
    GEMMs)."""
    if not team_splits_columns(batch, min(weight.shape)) or not _mkldnn_ok(weight):
        return []
    parts = min(torch.get_num_threads(), batch)
    bounds = part_bounds(weight.shape[0], parts)
    widest = max(e - b for b, e in bounds)
    if part_layout_speedup(batch, weight.shape[1], widest) < PART_LAYOUT_MARGIN:
        return []
    layouts = [prepacked(weight[b:e], batch) for b, e in bounds]
    return [] if any(x is None for x in layouts) else layouts


def training_layout(weight: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """:func:`prepacked` for the training loop's step products of ``weight`` ((4H, H) or its
    transpose), or None (plain mm) below :data:`TRAINING_LAYOUT_MIN_HIDDEN` and where the
    team splits the products by columns (:func:`team_splits_columns`)."""
    if min(weight.shape) < TRAINING_LAYOUT_MIN_HIDDEN or \
            team_splits_columns(batch, min(weight.shape)):
        return None
    return prepacked(weight, batch)


class StepMatmul:
    """y = x W^T for a fixed W applied at every step. On CPU, W is reordered once into oneDNN's
    blocked layout (``torch.ops.mkldnn``), which ran these skinny GEMMs ~1.35x faster than
    plain ``mm`` on an AMD EPYC Zen 4 (even with it on Zen 3: benchmarks/step_gemm_split.py);
    elsewhere (or if oneDNN is missing) it is ``torch.mm``."""

    def __init__(self, weight: torch.Tensor, batch: int):
        self.weight = weight
        self.packed = prepacked(weight, batch)
        self.weight_t = weight.t()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return torch.mm(x, self.weight_t)


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
        res = module.recurrence_forward(px, h0, c0, w_hh, shift, gain_x, gain_h,
                                        native_term(form_x), native_term(form_h), t0, True,
                                        training_layout(w_hh, px.shape[1]), w_ih,
                                        team_splits_columns(px.shape[1], w_hh.shape[1]),
                                        part_layouts(w_hh, px.shape[1]))
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
        grads = native_extension().recurrence_backward(
            grad_out, grad_h, grad_c, px, h0, c0, out, c_all, acts, z_hat, stats_x, stats_h,
            w_hh, gain_x, gain_h, native_term(form_x), native_term(form_h), ctx.t0,
            training_layout(w_hh.t(), out.shape[1]), w_ih, ctx.needs_input_grad[0],
            team_splits_columns(out.shape[1], w_hh.shape[1]), part_layouts(w_hh.t(), out.shape[1]))
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
    """Whether the native loop runs a call without autograd on ``x`` (T, B, F) with these
    normalizations -- checked quietly, for callers with another fast path (torch's LSTM)."""
    return native_loop_runs(x, native_forms(x.shape[1], norm_x, norm_h), (torch.float32,),
                            quiet=True)


def native_inference(px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0=0,
                     layout=None):
    """The native loop's forward without autograd for given native forms (a packed model's
    folded normalizations), or None when the native loop is not to run here. ``layout``: W_h
    already in oneDNN's layout (:func:`prepacked`) for px's batch, kept by the caller."""
    if not native_loop_runs(px, (form_x, form_h), (torch.float32,)):
        return None
    return _native_forward(px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0, layout)


def _native_forward(px, h0, c0, w_hh, shift, gain_x, gain_h, form_x, form_h, t0, layout=None,
                    w_ih=None):
    """The native forward without autograd (keeps nothing for a backward). W_h is reordered
    into oneDNN's layout for this call unless the caller keeps it (``layout``): at H=2000 the
    reorder of a 64 MB W_h costs more than a step. A caller that keeps a layout calls once a
    step or a batch with the same weights (eval, generation), so its team splits the batch rows
    and reuses it; without one, the team splits the products by columns where
    :func:`team_splits_columns` says so (whose per-call copies of W_h a long sequence repays).
    With ``w_ih``, px is x (fused projection)."""
    batch = px.shape[1]
    split = layout is None and team_splits_columns(batch, w_hh.shape[1])
    whole = None if split else (prepacked(w_hh, batch) if layout is None else layout)
    with torch.no_grad():
        out, h, c = native_extension().recurrence_forward(
            px, h0, c0, w_hh, shift, gain_x, gain_h, native_term(form_x), native_term(form_h),
            t0, False, whole, w_ih, split, part_layouts(w_hh, batch) if split else [])
    return out, h, c


# inputs at most this wide have their projection x W_x^T fused into the native loop
# (sequential MNIST: one pixel a step): no (T, B, 4H) px block is written, read, or
# differentiated through a GEMM with K this small
FUSED_INPUT_COLUMNS = 4


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
    px = x W_x^T (fused into the native loop for K <= FUSED_INPUT_COLUMNS, else one GEMM).
    Native (C++) where it builds and both normalizations have a native form
    (:meth:`nq_plugin.norm.Normalization.native_form`), else the Python loop."""
    tensors = (px, h0, c0, w_hh, shift, gain_x, gain_h, input_weight)
    needs_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad
                                                 for x in tensors)
    forms = native_forms(px.shape[1], norm_x, norm_h) if px.device.type == "cpu" else (None, None)
    native = native_loop_runs(px, forms)
    if input_weight is not None and not (native and px.shape[-1] <= FUSED_INPUT_COLUMNS
                                         and input_weight.dtype == px.dtype):
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
