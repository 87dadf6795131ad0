"""How the LSTM loop forms its step products, y = x W^T for a W fixed over the steps
(z_t = h_{t-1} W_h^T forward, dL/dh_{t-1} = dL/dz_t W_h backward): the one place that chooses.

- The weight's layout: oneDNN's blocked layout (``torch.ops.mkldnn``, reordered once a call)
  or a plain GEMM, by the hidden size (:data:`TRAINING_LAYOUT_MIN_HIDDEN`) and, for a thread's
  part of a split product, by timing both on this CPU (:func:`part_layout_speedup`).
- The native loop's split of a product between its team of threads (``recurrence.cpp``): by
  the batch rows (each thread multiplies its rows by the whole W) or by output columns (each
  thread forms its columns for the whole batch), by ``backend.current().step_split`` and the
  hidden size (:func:`team_splits_columns`).

:func:`step_weights` puts both into the extension's ``StepWeights``, what the native loop
takes; :class:`StepMatmul` is the Python loop's product.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import List, Optional, Tuple

import torch

from .. import backend
from ..native import extension as native_extension

logger = logging.getLogger(__name__)


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
# layout only from this hidden size on (measured when the team split the batch rows): at H=100
# (sequential MNIST, 50 rows a thread) plain mm is faster (the training step 5-8 % faster), at
# H=300 (PTB word, 10 rows a thread) oneDNN is (plain mm 6-9 % slower); AMD EPYC, 2 threads,
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


def team_size(batch: int) -> int:
    """The native loop's team for ``batch`` rows: torch's intra-op threads, at most one a row
    (recurrence.cpp's ``team_size``)."""
    return max(1, min(torch.get_num_threads(), batch))


def team_splits_columns(batch: int, hidden: int) -> bool:
    """Whether the native loop's team splits the step products by columns: a team of several
    threads, as ``backend.current().step_split`` says (``auto``: from
    :data:`COLUMN_SPLIT_MIN_HIDDEN` on)."""
    if team_size(batch) < 2:
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
    bounds = part_bounds(weight.shape[0], team_size(batch))
    widest = max(e - b for b, e in bounds)
    if part_layout_speedup(batch, weight.shape[1], widest) < PART_LAYOUT_MARGIN:
        return []
    layouts = [prepacked(weight[b:e], batch) for b, e in bounds]
    return [] if any(x is None for x in layouts) else layouts


def training_layout(weight: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """:func:`prepacked` for a training loop's whole step product of ``weight`` ((4H, H) or
    its transpose), or None (plain mm) below :data:`TRAINING_LAYOUT_MIN_HIDDEN`."""
    if min(weight.shape) < TRAINING_LAYOUT_MIN_HIDDEN:
        return None
    return prepacked(weight, batch)


def step_weights(weight: torch.Tensor, batch: int, *, training: bool,
                 layout: Optional[torch.Tensor] = None):
    """The native loop's weights for the step product x weight^T (``weight`` (N, K); W_h
    forward, W_h^T backward) with ``batch`` rows, as the extension's ``StepWeights``:

    - ``layout`` (the whole weight in oneDNN's layout, kept by an eval-mode caller that steps
      often with it): that, and the team splits the batch rows;
    - where :func:`team_splits_columns`: one part per thread, its rows of ``weight`` (the
      product's columns), in oneDNN's layout where :func:`part_layouts` says, else plain
      (K, N_part) copies cut straight from ``weight`` (one copy of W per call);
    - else the whole weight: in oneDNN's layout (in training from
      :data:`TRAINING_LAYOUT_MIN_HIDDEN` on, :func:`training_layout`; in eval always), else
      plain W^T.
    """
    plan = native_extension().StepWeights()
    weight = weight.detach()
    if layout is not None:
        plan.packed, plan.parts = True, [layout]
    elif team_splits_columns(batch, min(weight.shape)):
        layouts = part_layouts(weight, batch)
        plan.packed = bool(layouts)
        plan.parts = layouts or [weight[b:e].t().contiguous()
                                 for b, e in part_bounds(weight.shape[0], team_size(batch))]
    else:
        whole = training_layout(weight, batch) if training else prepacked(weight, batch)
        plan.packed = whole is not None
        plan.parts = [whole if whole is not None else weight.t().contiguous()]
    return plan


class StepMatmul:
    """y = x W^T for a fixed W applied at every step (the Python loop's product). On CPU, W is
    reordered once into oneDNN's blocked layout (``torch.ops.mkldnn``), which ran these skinny
    GEMMs ~1.35x faster than plain ``mm`` on an AMD EPYC Zen 4 (even with it on Zen 3:
    benchmarks/step_gemm_split.py); elsewhere (or if oneDNN is missing) it is ``torch.mm``."""

    def __init__(self, weight: torch.Tensor, batch: int):
        self.weight = weight
        self.packed = prepacked(weight, batch)
        self.weight_t = weight.t()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return torch.mm(x, self.weight_t)
