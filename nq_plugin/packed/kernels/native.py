"""The native CPU kernel for packed weights (``nq_plugin/csrc/packed_gemv.cpp``): x W^T computed
from the packed words, no unpacking, exact fp32 activations -- for the small batches of
token-by-token inference (generation, streaming scoring). Part of the plugin's one native
extension, built on first use (:mod:`nq_plugin.native`).

``NQ_PLUGIN_KERNEL`` chooses the kernel of packed products: ``auto`` (default: on CPU the native
kernel for small batches when it builds, else PyTorch; on GPU Triton when it imports, else
PyTorch), ``native`` (CPU: native for every batch, or an error), ``triton`` (GPU: Triton or an
error) or ``torch`` (the exact PyTorch path everywhere). Without a compiler ``auto`` falls back to
PyTorch and says so once in the log.

``NQ_PLUGIN_LOOKUP`` chooses the table lookup of the exact products (:func:`lookup_choice`):
``auto`` (default: ``wide`` where the CPU has AVX-512 F and VL, else ``triples`` in an AVX2
build where they measure faster than the pairs on this CPU, :func:`triples_speedup`, else
``pairs``), ``wide`` (``nibbles``, and in the fused step W_h by a 32-entry table per
3 ternary or 5 binary inputs in two 512-bit registers, read from its :func:`wide_layout`),
``nibbles`` (a 16-value table per 4 inputs, vpermt2ps), ``triples`` (``pairs``, and in the fused
step both matrices by an 8-value table per 3 inputs, AVX2's vpermps, read from their
:func:`triples_layout`) or ``pairs`` (a 4-value table per 2 inputs, AVX2's vpermilps). All give
the exact product up to fp32 summation order.

``NQ_PLUGIN_ACTIVATIONS`` chooses the activations of the fused CPU step's recurrent product:
``fp32`` (default: exact) or ``int8`` -- h quantized per row to int8 (q = round(h / s),
s = max|h| / 127) and B q computed exactly in integers with vpshufb lookup tables over groups
of 4 inputs (``csrc/q8_lookup.h``): faster, and no longer equal to the unpacked model (its
effect on a zoo model's BPC is in benchmarks/README.md). It applies where the fused native step
runs (token-by-token steps of at most ``MAX_NATIVE_BATCH`` rows); sequences and the GPU stay
exact.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Optional, Tuple

import torch

from ... import backend
from ...logs import LogOnce
from ...native import build_error, extension
from ..format import unpack_matrix, word_planes

logger = logging.getLogger(__name__)
_log_once = LogOnce(logger)
MAX_NATIVE_BATCH = 8  # beyond this, unpacking once and one GEMM is faster
LANES = 8  # rows per block of the lookup kernels (csrc/packed_products.h, kLanes)
Q8_ROWS = 32  # rows per block of the int8-activation layout (csrc/q8_lookup.h)


# csrc/packed_products.h, Lookup: the tables' lookup of packed_gemv (from the planes; wide: the
# nibbles', beside the fused step's wide layouts; triples: the pairs', beside the fused step's
# triples layouts) and of the fused step
LOOKUP_NUMBERS = {"pairs": 0, "nibbles": 1, "wide": 1, "triples": 0}
STEP_LOOKUP_NUMBERS = {"pairs": 0, "nibbles": 1, "wide": 1, "triples": 2}
TRIPLE_GROUPS = 10  # groups of 3 inputs per word of the triples layout (kTripleGroups)
WIDE_UNITS = 32  # hidden units of each gate per block of the wide layout (kWideUnits)
# auto takes the triples over the pairs only when they measured at least this much faster
# here: a close call stays with the pairs, so that the choice does not flip from run to run
TRIPLES_MARGIN = 1.1


def lookup_setting() -> str:
    """The backend's ``lookup`` as set (``NQ_PLUGIN_LOOKUP``): auto | wide | nibbles | triples
    | pairs."""
    return backend.current().lookup.value


@functools.lru_cache(maxsize=None)
def triples_speedup() -> float:
    """A ternary product's time by the pair lookup over its time by the triples, measured once
    a process on this CPU by the extension (``packed_triples_speedup``: a 512 x 960 product in
    both layouts, best of 9 alternating rounds, a few milliseconds); 0 where the triples do not
    run. Measured because the triples' full-width vpermps is one fast instruction on some CPUs
    and not on others: 1.7-1.8x the pairs on Zen 4's AVX2, 0.7x on Zen 3 (whose vpermps
    across lanes costs more than the pairs' in-lane vpermilps; benchmarks/README.md)."""
    speedup = float(load().packed_triples_speedup())
    if speedup > 0:
        logger.info("nq_plugin: the triples lookup measured %.2fx the pairs on this CPU: "
                    "NQ_PLUGIN_LOOKUP=auto takes the %s", speedup,
                    "triples" if speedup >= TRIPLES_MARGIN else "pairs")
    return speedup


def lookup_choice() -> str:
    """The lookup the native kernel's exact products use here: ``wide`` (the nibbles, and a
    fused step's W_h by 32-entry tables per 3 ternary or 5 binary inputs), ``nibbles`` (a
    16-value table per 4 inputs, AVX-512 F and VL), ``triples`` (the pairs, and a fused step's
    matrices by 8-value tables per 3 inputs, AVX2) or ``pairs`` (a 4-value table per 2 inputs);
    ``auto`` takes wide where the CPU runs it, else triples where the build has AVX2 and they
    measured at least ``TRIPLES_MARGIN`` times the pairs' speed here (:func:`triples_speedup`),
    else pairs. Forcing wide or nibbles on a CPU without AVX-512, or triples on a build without
    AVX2, is an error."""
    setting = lookup_setting()
    ext = load()
    supported = bool(ext.packed_nibbles_supported()) and bool(ext.packed_wide_supported())
    triples = bool(ext.packed_triples_supported())
    if setting == "auto":
        if supported:
            return "wide"
        return "triples" if triples and triples_speedup() >= TRIPLES_MARGIN else "pairs"
    if setting in ("nibbles", "wide") and not supported:
        raise RuntimeError(f"{backend.current().label('lookup')}, but this CPU (or the "
                           "extension's build) has no AVX-512 F and VL: use "
                           f"{'triples, ' if triples else ''}pairs or auto")
    if setting == "triples" and not triples:
        raise RuntimeError(f"{backend.current().label('lookup')}, but the extension's build "
                           "has no AVX2: use pairs or auto")
    return setting


def check_activation_mode(mode: str, source: str) -> str:
    """``mode`` as an activation mode (fp32 | int8), or an error naming ``source``."""
    return backend.parse("activations", mode, source).value


def activation_mode() -> str:
    """The backend's ``activations`` (``NQ_PLUGIN_ACTIVATIONS``; see the module doc)."""
    return backend.current().activations.value


def kernel_choice() -> str:
    """The backend's ``packed_kernel`` (``NQ_PLUGIN_KERNEL``; see the module doc)."""
    return backend.current().packed_kernel.value


def load():
    """The compiled extension (:mod:`nq_plugin.native`), or None (auto mode, build failed:
    logged once)."""
    module = extension()
    if module is None and kernel_choice() == "native":
        raise RuntimeError(f"NQ_PLUGIN_KERNEL=native but the native kernel failed to build: "
                           f"{build_error()}")
    return module


def largest_native_batch() -> Optional[int]:
    """The largest batch whose products on the CPU go through the native kernel: None for any
    (``NQ_PLUGIN_KERNEL=native``), 0 for none (PyTorch chosen, or the extension is unavailable
    in auto mode)."""
    choice = kernel_choice()
    if choice in ("torch", "triton") or load() is None:
        return 0
    return None if choice == "native" else MAX_NATIVE_BATCH


def use_native(batch: int) -> bool:
    """Whether x W^T for ``batch`` rows on the CPU goes through the native kernel."""
    largest = largest_native_batch()
    return largest is None or batch <= largest


def packed_gemv(x, planes, scale, bits: int, columns: int):
    return load().packed_gemv(x.contiguous().float(), *word_planes(planes, bits), scale.float(),
                              columns, LOOKUP_NUMBERS[lookup_choice()])


def unpack(planes, bits: int, columns: int, scale=None):
    """diag(scale) B (or B without ``scale``) as a dense fp32 matrix decoded by the native
    extension -- one pass over the words -- or None when the PyTorch path is chosen
    (``NQ_PLUGIN_KERNEL=torch``/``triton``), the planes are not on the CPU, or the extension
    is unavailable."""
    first, neg = word_planes(planes, bits)
    if first.device.type != "cpu" or kernel_choice() in ("torch", "triton"):
        return None
    module = load()
    if module is None:
        return None
    return module.packed_unpack(first, neg, None if scale is None else scale.float(), columns)


def add_sub_planes(planes, bits: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The words the lookups read: the adds (binary: the signs; ternary: nonzero and not
    negative) and, ternary, the subtracts (nonzero and negative); None for binary."""
    first, neg = word_planes(planes, bits)
    return (first, None) if neg is None else (first & ~neg, first & neg)


def q8_layout(planes, bits: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The nibble layout the int8-activation product reads (``csrc/q8_lookup.h``): for the adds
    (binary: the sign bits; ternary: nonzero and not negative) and, ternary, the subtracts, a
    (ceil(R / 32), words * 4, 32) uint8 tensor whose [k, m, r] is byte m of row 32k + r's packed
    words (its 8 code bits for inputs 8m..8m+7) -- the words' bytes transposed per 32 rows, as
    many bytes as the plane."""
    if sys.byteorder != "little":
        raise RuntimeError("the int8-activation layout reads the packed words' bytes in "
                           "little-endian order")
    add, sub = add_sub_planes(planes, bits)

    def transposed(words):
        rows, count = words.shape
        data = words.contiguous().view(torch.uint8).reshape(rows, 4 * count)
        pad = (-rows) % Q8_ROWS
        if pad:
            data = torch.cat([data, data.new_zeros(pad, 4 * count)])
        return data.reshape(-1, Q8_ROWS, 4 * count).transpose(1, 2).contiguous()
    return transposed(add), None if sub is None else transposed(sub)


def lane_layout(planes, bits: int, segment: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The lane layout the fused step reads instead of the planes (``csrc/packed_products.h``,
    RowBlock): the rows in segments of ``segment`` (a gate's H rows), each segment in blocks of
    ``LANES`` rows (the last block's missing rows repeat the segment's last row), and each
    block's words interleaved -- a (blocks, words, LANES) int32 tensor whose [k, q, l] is word q
    of the block's row l -- for the adds (binary: the signs; ternary: nonzero and not negative)
    and, ternary, the subtracts: one 256-bit load a word where the planes need 8 rows' words
    transposed in registers. As many bytes as the planes."""
    add, sub = add_sub_planes(planes, bits)
    return (_interleaved(add, segment, "lane layout"),
            None if sub is None else _interleaved(sub, segment, "lane layout"))


def triples_layout(planes, bits: int, segment: int,
                   columns: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The triples layout a fused step's W_x and W_h are read from under the ``triples`` lookup
    (``csrc/packed_triples.cpp``): the rows arranged as :func:`lane_layout`'s (segments of
    ``segment`` rows in blocks of ``LANES``, a segment's missing rows repeating its last), each
    word holding 10 groups of 3 inputs as 3-bit codes -- group i of word q (inputs 30 q + 3 i ..
    30 q + 3 i + 2) at bit 3 i for i < 5, 16 + 3 (i - 5) after, input 3 i + d at the code's bit
    d -- for the adds (binary: the signs, bit set for +1; ternary: bit set for +1) and, ternary,
    the subtracts (bit set for -1); inputs past ``columns`` (default: the planes' 32 per word)
    0. A (blocks, ceil(C / 30), LANES) int32 tensor each: 16/15 as many bytes as the planes."""
    columns = 32 * word_planes(planes, bits)[0].shape[1] if columns is None else columns
    codes = unpack_matrix(planes, bits, columns, dtype=torch.int16)
    words = -(-columns // (3 * TRIPLE_GROUPS))
    pad = words * 3 * TRIPLE_GROUPS - columns
    shifts = torch.tensor([3 * i if i < 5 else 16 + 3 * (i - 5) for i in range(TRIPLE_GROUPS)],
                          dtype=torch.int64)

    def encoded(selected):  # (rows, columns) bool -> (rows, words) int32
        bits3 = torch.nn.functional.pad(selected.to(torch.int64), (0, pad))
        bits3 = bits3.reshape(bits3.shape[0], words, TRIPLE_GROUPS, 3)
        group = bits3[..., 0] + 2 * bits3[..., 1] + 4 * bits3[..., 2]
        word = (group << shifts).sum(-1)
        return word.to(torch.int32)
    add = encoded(codes > 0)
    sub = encoded(codes < 0) if bits == 2 else None
    return _interleaved(add, segment, "triples layout"), (
        None if sub is None else _interleaved(sub, segment, "triples layout"))


def _interleaved(words: torch.Tensor, segment: int, what: str) -> torch.Tensor:
    """(rows, count) words in segments of ``segment`` rows, each in blocks of ``LANES`` rows
    (the last block's missing rows repeating the segment's last row), each block's words
    interleaved: a (blocks, count, LANES) tensor whose [k, q, l] is word q of block k's row l."""
    rows, count = words.shape
    if rows % segment:
        raise ValueError(f"{what}: {rows} rows are not segments of {segment}")
    w = words.reshape(rows // segment, segment, count)
    pad = (-segment) % LANES
    if pad:
        w = torch.cat([w, w[:, -1:].expand(-1, pad, count)], dim=1)
    return w.reshape(-1, LANES, count).transpose(1, 2).contiguous()


def wide_layout(planes, bits: int, hidden: int, columns: Optional[int] = None) -> torch.Tensor:
    """The wide layout a fused step's W_h (or W_x) is read from under the ``wide`` lookup
    (``csrc/packed_wide.cpp``): one byte per group of inputs -- ternary, 3 inputs, code
    9 d0 + 3 d1 + d2 (digit 0 for a zero weight, 1 for +1, 2 for -1); binary, 5 inputs, their
    sign bits (bit i set for a +1 of input 5j + i) -- inputs past the matrix 0 / -1, a row's 4
    consecutive groups side by side, and the rows in blocks of ``WIDE_UNITS`` hidden units of
    each of the 4 gates: a (ceil(H / 32), ceil(C / 4G), 512) uint8 tensor whose
    [k, q, 4 (32 g + l) + i] is group 4q + i of row g H + 32 k + l (missing rows: 0), for the
    matrix's ``columns`` C (default H; the words' 32 per word for W_x, whose inputs past the
    model's count as 0). 4/3 (ternary) or 8/5 (binary) as many bytes as the planes."""
    rows, columns = 4 * hidden, hidden if columns is None else columns
    codes = unpack_matrix(planes, bits, columns, dtype=torch.int16)
    if codes.shape[0] != rows:
        raise ValueError(f"wide layout: {codes.shape[0]} rows are not the 4 x {hidden} of an "
                         "LSTM matrix")
    if bits == 2:
        size, digits, weights = 3, torch.where(codes < 0, 2, codes), (9, 3, 1)
    elif bits == 1:
        size, digits, weights = 5, (codes > 0).to(torch.int16), (1, 2, 4, 8, 16)
    else:
        raise ValueError(f"wide layout: {bits}-bit weights (1 or 2)")
    digits = torch.nn.functional.pad(digits, (0, (-columns) % (4 * size)))
    groups = sum(w * digits[:, i::size] for i, w in enumerate(weights)).to(torch.uint8)
    blocks, quads = -(-hidden // WIDE_UNITS), groups.shape[1] // 4
    gates = torch.nn.functional.pad(groups.reshape(4, hidden, quads, 4),
                                    (0, 0, 0, 0, 0, blocks * WIDE_UNITS - hidden))
    # (gate, block, unit, quad, i) -> (block, quad, gate, unit, i)
    return gates.reshape(4, blocks, WIDE_UNITS, quads, 4).permute(1, 3, 0, 2, 4).reshape(
        blocks, quads, 16 * WIDE_UNITS).contiguous()


def packed_gemv_q8(x, layout, scale, rows: int, columns: int):
    """s_b diag(scale) B q_b for the rows x_b of ``x`` (int8 activations, see the module doc)."""
    return load().packed_gemv_q8(x.contiguous().float(), layout[0], layout[1], scale.float(),
                                 rows, columns)


def lstm_stepper(ih, hh, layer_norm_x=None, layer_norm_h=None, q8_hh=None):
    """One fused LSTM step from the packed words on the CPU (``packed_lstm_step`` of the
    extension; the Triton step's arithmetic) for fixed matrices ``ih`` / ``hh`` ((planes, bits)),
    their words resolved once: step(x, h, c, ax, ah, shift, h_out=None) -> (h, c) with gates =
    ax * N_x(B_x x) + ah * N_h(B_h h) + shift; ``h_out`` receives h. N is the identity, or for a
    term given ``layer_norm_*`` = (per-row scale, eps) the layer norm of scale * B y over each
    gate block (ax / ah then being its gain). ``q8_hh``: W_h's :func:`q8_layout`, for int8
    activations in the recurrent product (inexact mode). The exact products use
    :func:`lookup_choice`'s lookup and read the matrices' :func:`lane_layout` (as many bytes
    again as the planes), under ``wide`` their :func:`wide_layout` (4/3 or 8/5 as many), under
    ``triples`` their :func:`triples_layout` (16/15 as many), resolved here once. A generation
    step is one call."""
    ext = load()
    fused = ext.packed_lstm_step
    m = ext.PackedStepOperands()
    lookup = lookup_choice()
    m.lookup = STEP_LOOKUP_NUMBERS[lookup]

    def resident(*layouts):  # what every step reads whole: on huge pages (huge_pages.cpp)
        return tuple(None if t is None else ext.huge_page_copy(t) for t in layouts)
    if q8_hh is not None:
        _log_once("int8", "nq_plugin: token-by-token CPU steps quantize h to int8 for the "
                  "recurrent product (NQ_PLUGIN_ACTIVATIONS=int8): faster, not exact")
        m.hh_q8_add, m.hh_q8_sub = resident(*q8_hh)
    m.ih_plus, m.ih_neg = word_planes(*ih)
    m.hh_plus, m.hh_neg = word_planes(*hh)
    hidden = m.hh_plus.shape[0] // 4
    if lookup == "wide":  # W_x (its words' columns) read from its wide layout
        m.ih_wide, = resident(wide_layout(*ih, hidden, 32 * m.ih_plus.shape[1]))
    elif lookup == "triples":  # the lane fields hold the triples layouts
        m.ih_lane_add, m.ih_lane_sub = resident(*triples_layout(*ih, hidden))
    else:
        m.ih_lane_add, m.ih_lane_sub = resident(*lane_layout(*ih, hidden))
    if q8_hh is None and lookup == "wide":  # W_h read from its wide layout
        m.hh_wide, = resident(wide_layout(*hh, hidden))
    elif q8_hh is None and lookup == "triples":
        m.hh_lane_add, m.hh_lane_sub = resident(*triples_layout(*hh, hidden, hidden))
    elif q8_hh is None:  # the int8-activation product reads its own layout
        m.hh_lane_add, m.hh_lane_sub = resident(*lane_layout(*hh, hidden))
    if layer_norm_x is not None:
        m.pre_x, m.eps_x = layer_norm_x
    if layer_norm_h is not None:
        m.pre_h, m.eps_h = layer_norm_h

    return NativeStepper(fused, ext.packed_lstm_token_step, m)


class NativeStepper:
    """A packed layer's fused CPU step (:func:`lstm_stepper`): ``step(x, h, c, ax, ah, shift,
    h_out=None) -> (h, c)`` for x (B, K), h, c (B, H), and :meth:`token` for a generation step
    in a one-layer model's shapes, with no tensor operation in Python."""

    def __init__(self, fused, token, operands):
        self._fused, self._token, self._m = fused, token, operands

    @property
    def operands(self):
        """The extension's ``PackedStepOperands``: the words and layouts each call reads."""
        return self._m

    def __call__(self, x, h, c, ax, ah, shift, h_out=None):
        dtype = x.dtype
        if dtype != torch.float32:
            x, h, c = x.float(), h.float(), c.float()
        h_new, c_new = self._fused(x, h, c, ax, ah, shift, self._m)
        if h_out is not None:
            h_out.copy_(h_new)
        if dtype != torch.float32:
            return h_new.to(dtype), c_new.to(dtype)
        return h_new, c_new

    def token(self, x, h, c, ax, ah, shift):
        """x (1, B, K), h, c (1, B, H), float32 -> (output, (h, c)), each (1, B, H): the model's
        return value (the output a tensor of its own, as nn.LSTM's)."""
        out, h_new, c_new = self._token(x, h, c, ax, ah, shift, self._m)
        return out, (h_new, c_new)
