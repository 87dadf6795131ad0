"""How the LSTM loop forms its step products, y = x W^T for a W fixed over the steps
(z_t = h_{t-1} W_h^T forward, dL/dh_{t-1} = dL/dz_t W_h backward): the one place that chooses.

- The weight's layout, for the whole weight (a split by rows) or the threads' parts (a split
  by columns): plain GEMMs, oneDNN's blocked layout (``torch.ops.mkldnn``) or the extension's
  own step GEMM's panels (``csrc/step_gemm.cpp``), each reordered once a call, by timing them
  on this CPU as the team runs them (:func:`part_layout`; ``backend.current().step_gemm``
  forces one). An eval caller's kept oneDNN layout is used as it is.
- The native loop's split of a product between its team of threads (``recurrence.cpp``): by
  the batch rows (each thread multiplies its rows by the whole W) or by output columns (each
  thread forms its columns for the whole batch), by ``backend.current().step_split`` and the
  hidden size (:func:`team_splits_columns`), and, in training from H=192 on, by timing the
  loop's first calls with each (:func:`timed_loop`, :class:`SplitTrial`).

:func:`step_weights` puts both into the extension's ``StepWeights``, what the native loop
takes; :class:`StepMatmul` is the Python loop's product.
"""
from __future__ import annotations

import functools
import logging
import statistics
import time
from typing import Callable, Dict, Hashable, List, Optional, Tuple, TypeVar

import torch

from .. import backend
from ..native import extension as native_extension

logger = logging.getLogger(__name__)


def onednn_wrong_because() -> Optional[str]:
    """Why oneDNN's products would be wrong with torch's threads now, or None where they are
    right: oneDNN splits a product between torch's threads, and where its region gets fewer --
    OpenMP's thread limit below them, or dynamic adjustment on -- the missing threads' part is
    never computed (torch 2.13: a 6 x 20 . 20 x 80 product off by 69 % of its scale with
    OMP_THREAD_LIMIT=1 and 2 threads, or with OMP_DYNAMIC=true on a loaded machine). The
    native loop checks the same at each product (``recurrence.cpp``, ``onednn_right_here``)."""
    if backend.omp_dynamic():
        return ("OMP_DYNAMIC is on: OpenMP may give oneDNN fewer threads than it splits its "
                "products for, and they come out wrong; unset it")
    limit, threads = backend.omp_thread_limit(), torch.get_num_threads()
    if limit is not None and limit < threads:
        return (f"OMP_THREAD_LIMIT={limit} is below torch's {threads} threads, with which "
                "oneDNN computes wrong products: raise the limit or torch.set_num_threads to "
                "at most it")
    return None


def onednn_right_here() -> bool:
    """Whether oneDNN's products are right with torch's threads now
    (:func:`onednn_wrong_because`)."""
    return onednn_wrong_because() is None


def _mkldnn_ok(w: torch.Tensor) -> bool:
    return (w.device.type == "cpu" and w.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and onednn_right_here())


def prepacked(weight: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """``weight`` reordered into oneDNN's blocked layout for products with ``batch`` rows, or
    None where oneDNN cannot (the callers then use a plain GEMM)."""
    if not _mkldnn_ok(weight):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), batch)
    except RuntimeError:  # an op signature of another torch version: exact fallback
        return None


# From this hidden size on, a team of several threads (torch's intra-op threads, at most one
# per batch row: recurrence.cpp's ``team_size``) splits each step product by its output
# columns, the whole batch's rows at once: each thread then reads its part of W_h at a step
# instead of all of it (alone, 10 rows of x W^T at PTB word's size ran 1.4x
# slower than 20 rows of half the columns; AMD EPYC Zen 3). Below, W_h fits a core's cache
# whole (160 KB at H=100, sequential MNIST) and the team splits the batch rows, without the two
# barriers a step the column split takes.
COLUMN_SPLIT_MIN_HIDDEN = 192


def team_size(batch: int) -> int:
    """The native loop's team for ``batch`` rows: torch's intra-op threads, at most one a row
    (recurrence.cpp's ``team_size``)."""
    return max(1, min(torch.get_num_threads(), batch))


def team_splits_columns(batch: int, hidden: int) -> bool:
    """Whether the native loop's team splits the step products by columns where nothing is
    timed (eval; :func:`timed_loop` times the two in training): a team of several threads, as
    ``backend.current().step_split`` says (``auto``: from :data:`COLUMN_SPLIT_MIN_HIDDEN`
    on)."""
    if team_size(batch) < 2:
        return False
    split = backend.current().step_split
    if split is backend.StepSplit.AUTO:
        return hidden >= COLUMN_SPLIT_MIN_HIDDEN
    return split is backend.StepSplit.COLUMNS


def split_is_timed(batch: int, hidden: int) -> bool:
    """Whether the training loop's split is left to :func:`timed_loop`: ``step_split`` auto, a
    team of several threads, from :data:`COLUMN_SPLIT_MIN_HIDDEN` on (below, W_h fits a core's
    cache and the rows split has no barriers to lose)."""
    return (backend.current().step_split is backend.StepSplit.AUTO
            and team_splits_columns(batch, hidden))


# From H=192 on, either split can be the faster for the whole loop, and which differs by CPU
# and shape: on an AMD EPYC Zen 3 the column split ran 1.08-1.19x the rows split at PTB word's
# size and 0.99-1.15x at PTB char's, while on an Intel Xeon the rows split was ahead in 7 of 8
# pairs at the word size (+4-9 %) and at the char size read 0.96 / 0.97 nn.LSTM against the
# columns' 0.90 / 0.92 (layer norm, PowerNorm; benchmarks/README.md). The products timed alone
# do not tell (the barriers, the elementwise work between the products and what it leaves in
# the caches decide), so the loop's own first training calls of each shape time both,
# alternating, a call each: the first of each split is not counted (it times and packs its
# weight's layout), then SPLIT_TRIALS of each; the split with the lower median seconds per step
# is kept for the process (columns on a tie). Forward and backward are timed apart (keys of
# their own).
SPLIT_TRIALS = 3


class SplitTrial:
    """The timing of the two splits for one key (direction, shape, normalizations, threads):
    :meth:`next` says which split the next call takes (alternating, columns first, until
    :attr:`chosen`), :meth:`record` counts a call's seconds per step."""

    def __init__(self, key: Hashable):
        self.key = key
        self.calls: Dict[bool, int] = {True: 0, False: 0}
        self.seconds: Dict[bool, List[float]] = {True: [], False: []}
        self.chosen: Optional[bool] = None

    def next(self) -> bool:
        if self.chosen is not None:
            return self.chosen
        return self.calls[True] <= self.calls[False]

    def record(self, columns: bool, seconds_per_step: float) -> None:
        if self.chosen is not None:
            return
        self.calls[columns] += 1
        if self.calls[columns] > 1:  # the first call of a split times and packs its layout
            self.seconds[columns].append(seconds_per_step)
        if min(len(v) for v in self.seconds.values()) < SPLIT_TRIALS:
            return
        median = {split: statistics.median(v) for split, v in self.seconds.items()}
        self.chosen = median[True] <= median[False]
        logger.info("nq_plugin: the loop's %s, split by columns %.0f us a step, by rows %.0f "
                    "us (median of %d calls each); by %s taken", self.key[0],
                    1e6 * median[True], 1e6 * median[False], SPLIT_TRIALS,
                    "columns" if self.chosen else "rows")


_TRIALS: Dict[Hashable, SplitTrial] = {}
Result = TypeVar("Result")


def timed_loop(direction: str, weight: torch.Tensor, batch: int, steps: int,
               norms: Tuple[str, str], run: Callable[[object], Result]) -> Result:
    """``run(plan)`` with the training loop's weights for its step products x weight^T
    (:func:`step_weights`; ``direction`` "forward" with W_h, "backward" with W_h^T) over
    ``steps`` steps of ``batch`` rows, normalized by ``norms``: where :func:`split_is_timed`,
    the split of this key's :class:`SplitTrial` (alternating until one is chosen, the call
    timed and recorded), else as :func:`team_splits_columns` says."""
    hidden = min(weight.shape)
    if not split_is_timed(batch, hidden):
        return run(step_weights(weight, batch, training=True))
    key = (direction, batch, tuple(weight.shape), weight.dtype, torch.get_num_threads(), norms)
    trial = _TRIALS.get(key)
    if trial is None:
        trial = _TRIALS[key] = SplitTrial(key)
    columns = trial.next()
    plan = step_weights(weight, batch, training=True, columns=columns)
    if trial.chosen is not None:
        return run(plan)
    start = time.perf_counter()
    result = run(plan)
    trial.record(columns, (time.perf_counter() - start) / max(1, steps))
    return result


# The layouts of a split step product's parts, each timed as the team runs it, are weighed by
# a margin: the fastest by seconds x margin is taken (plain on a tie), so that a timing near
# another's does not flip between processes.
# - oneDNN's blocked layout must beat plain mm and the panels by 1.1x (it was 1.1x plain mm at
#   H=300, 1.35x at H=650 on an AMD EPYC Zen 4; 0.8-0.95x on Zen 3);
# - the loop's own step GEMM's panels (csrc/step_gemm.cpp, AVX2 + FMA: 1.2-1.4x plain at PTB
#   word's size, 1.0-1.5x at PTB char's on Zen 3; its AVX-512 blocks 1.02-1.40x on an Intel
#   Xeon, where the AVX2 blocks ran 0.73-0.81x; benchmarks/step_gemm_kernel.py) need only be
#   faster than plain: they also spare the loop's caches the copies a BLAS (and oneDNN's
#   output) makes at every call, which a timing of the product alone does not see.
PART_LAYOUT_MARGIN = 1.1
PANELS_MARGIN = 1.0
MARGINS = {"plain": 1.0, "onednn": PART_LAYOUT_MARGIN, "panels": PANELS_MARGIN}


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


def part_candidates(weight: torch.Tensor) -> List[str]:
    """The layouts a split product's parts of ``weight`` can take here: ``plain`` always,
    ``onednn`` where oneDNN runs right (float32, :func:`onednn_right_here`), ``panels`` where
    the extension has its step GEMM (float32, an AVX2 and FMA build)."""
    names = ["plain"]
    if _mkldnn_ok(weight):
        names.append("onednn")
    if weight.dtype == torch.float32 and native_extension().step_gemm_supported():
        names.append("panels")
    return names


def _plan(pieces: List[torch.Tensor], batch: int, layout: str):
    """A ``StepWeights`` of ``pieces`` (slices of a weight, each (N_part, K)) in ``layout``:
    ``plain`` (K, N_part) copies, ``onednn``'s blocked layout (plain where oneDNN cannot take
    any piece), or ``panels`` (the step GEMM's)."""
    ext = native_extension()
    plan = ext.StepWeights()
    if layout == "onednn":
        packed = [prepacked(piece, batch) for piece in pieces]
        if all(x is not None for x in packed):
            plan.layout, plan.parts = ext.StepLayout.ONEDNN, packed
            return plan
    if layout == "panels":
        plan.layout = ext.StepLayout.PANELS
        plan.parts = [ext.step_gemm_pack(piece) for piece in pieces]
    else:
        plan.layout = ext.StepLayout.PLAIN
        plan.parts = [piece.t().contiguous() for piece in pieces]
    return plan


def whole_weight(weight: torch.Tensor, batch: int, layout: str):
    """The plan (``StepWeights``) of a product x weight^T split by the batch rows: the whole
    weight in ``layout`` (``plain`` W^T, ``onednn``'s blocked layout, ``panels``)."""
    return _plan([weight], batch, layout)


def column_parts(weight: torch.Tensor, batch: int, layout: str):
    """The split product x weight^T's plan (``StepWeights``) with each team thread's rows of
    ``weight`` (the product's columns) in ``layout``: ``plain`` (K, N_part) copies,
    ``onednn``'s blocked layout or ``panels`` (the step GEMM's)."""
    bounds = part_bounds(weight.shape[0], team_size(batch))
    return _plan([weight[b:e] for b, e in bounds], batch, layout)


def _timing_calls(batch: int, inner: int, cols: int) -> int:
    """Products a timing round: about 4e8 multiply-adds, 3 to 100 (tens of ms a round at the
    paper's sizes)."""
    return max(3, min(100, int(4e8 / max(1, batch * inner * cols))))


def split_plan(weight: torch.Tensor, batch: int, layout: str, columns: bool):
    """The plan of a product x weight^T in ``layout``, split by columns
    (:func:`column_parts`) or by the batch rows (:func:`whole_weight`)."""
    return (column_parts if columns else whole_weight)(weight, batch, layout)


@functools.lru_cache(maxsize=None)
def part_layout(batch: int, inner: int, cols: int, dtype: torch.dtype = torch.float32,
                threads: int = 0, columns: bool = True) -> str:
    """The layout of a step product's weight for x (``batch``, ``inner``) times a weight of
    ``cols`` rows, split by columns (the threads' parts) or, ``columns`` False, by the batch
    rows (the whole weight): each candidate (:func:`part_candidates`) timed as the loop's team
    runs it (``step_product_seconds``: every thread at once, meeting after each product as the
    column split does), best of 7 rounds, on random operands; the fastest by time x margin
    (:data:`MARGINS`: oneDNN's layout must beat plain and the panels by 1.1x, the panels plain
    by any amount). Once a process per shape, split and number of threads (``threads``: the
    caller's torch.get_num_threads(), part of the cache key), logged."""
    names = part_candidates(torch.empty(0, dtype=dtype))
    if names == ["plain"]:
        return "plain"
    ext = native_extension()
    weight = torch.randn(cols, inner, dtype=dtype)
    x = torch.randn(batch, inner, dtype=dtype)
    calls = _timing_calls(batch, inner, cols)
    seconds = {name: ext.step_product_seconds(x, weight,
                                              split_plan(weight, batch, name, columns), 7, calls)
               for name in names}
    chosen = min(seconds, key=lambda name: seconds[name] * MARGINS[name])  # plain on a tie
    logger.info("nq_plugin: a step product %dx%d.%dx%d split by %s on %d threads: %s; %s taken",
                batch, inner, inner, cols, "columns" if columns else "rows", team_size(batch),
                ", ".join(f"{name} {seconds['plain'] / t:.2f}x plain" for name, t in
                          seconds.items()), chosen)
    return chosen


def parts_layout_for(weight: torch.Tensor, batch: int, columns: bool = True) -> str:
    """The layout of a product's weight (its parts, ``columns``; else the whole of it) for
    ``batch`` rows: as ``backend.current().step_gemm`` says (``auto``: :func:`part_layout`'s
    timing); a layout asked for that does not run here is an error naming why."""
    wanted = backend.current().step_gemm
    if wanted is backend.StepGemm.AUTO:
        return part_layout(batch, weight.shape[1], weight.shape[0], weight.dtype,
                           torch.get_num_threads(), columns)
    if wanted.value not in part_candidates(weight):
        wrong = onednn_wrong_because() if wanted.value == "onednn" else None
        why = f" ({wrong})" if wrong else ""
        raise RuntimeError(
            f"{backend.current().label('step_gemm')}, but that layout does not run here for "
            f"{weight.dtype} weights{why} (it runs: {', '.join(part_candidates(weight))}); "
            "unset it for auto")
    return wanted.value


def step_weights(weight: torch.Tensor, batch: int, *, training: bool,
                 layout: Optional[torch.Tensor] = None, columns: Optional[bool] = None):
    """The native loop's weights for the step product x weight^T (``weight`` (N, K); W_h
    forward, W_h^T backward) with ``batch`` rows, as the extension's ``StepWeights``:

    - ``layout`` (the whole weight in oneDNN's layout, kept by an eval-mode caller that steps
      often with it): that, and the team splits the batch rows;
    - where ``columns`` (:func:`timed_loop`'s choice; unset, :func:`team_splits_columns`):
      one part per thread, its rows of ``weight`` (the product's columns), else (a split by
      the batch rows) the whole weight, in the layout :func:`parts_layout_for` says
      (:func:`split_plan`; one copy of W per call);
    - but in eval, split by rows, oneDNN's layout where it runs (as the eval callers that keep
      a layout have it), else plain W^T.
    """
    ext = native_extension()
    weight = weight.detach()
    if layout is not None:
        plan = ext.StepWeights()
        plan.layout, plan.parts = ext.StepLayout.ONEDNN, [layout]
        return plan
    if columns is None:
        columns = team_splits_columns(batch, min(weight.shape))
    if not (columns or training):
        return whole_weight(weight, batch, "onednn")
    return split_plan(weight, batch, parts_layout_for(weight, batch, columns), columns)


class StepMatmul:
    """y = x W^T for a fixed W applied at every step (the Python loop's product). On CPU, W is
    reordered once into oneDNN's blocked layout (``torch.ops.mkldnn``), which ran these skinny
    GEMMs ~1.35x faster than plain ``mm`` on an AMD EPYC Zen 4 (even with it on Zen 3:
    benchmarks/step_gemm_split.py); elsewhere (or if oneDNN is missing, or would compute
    wrong with torch's threads: :func:`onednn_right_here`, checked once a call of the loop)
    it is ``torch.mm``."""

    def __init__(self, weight: torch.Tensor, batch: int):
        self.weight = weight
        self.packed = prepacked(weight, batch)
        self.weight_t = weight.t()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return torch.mm(x, self.weight_t)
