"""The packed weight format (version 1).

Binary matrices (values s_j * b_jk, b in {-1, +1}) take 1 bit per weight, ternary matrices
(b in {-1, 0, +1}) 2 bits, both packed along the input dimension:

* words: int32; column k of row j lives in word k // 32, bit k % 32 (least significant bit first);
* binary: one plane, bit 1 = +1, bit 0 = -1;
* ternary: two planes, ``nonzero`` (bit 1 = value != 0) and ``negative`` (bit 1 = value < 0);
  value = nonzero * (1 - 2 * negative);
* padding: the input dimension is padded with 0 bits to a multiple of 32. A padded column decodes
  to -1 (binary) or 0 (ternary); kernels read inputs zero-padded (or masked), so padded columns
  never contribute. Bytes per (R x n) matrix: R * ceil(n / 32) * 4 per plane;
* scale: one fp32 number per row, s_j, which folds the quantizer's scale of the row's gate block
  and, for weight normalization, g_j / ||W_q,j||.

Full-precision matrices (``fp``, or W_x kept fp for scalar inputs) are stored as fp32.

Tensors of packed LSTM layer i (prefix ``layers.{i}.``), from :func:`layer_shapes`, for each
product P in (``ih``, ``hh``) with C columns (input size, hidden size) and R = 4H rows:

* ``P_plus`` (R, ceil(C/32)) int32 -- binary; ``P_nonzero``, ``P_negative`` -- ternary;
  ``P_scale`` (R,) fp32; or ``P_weight`` (R, C) fp32 for a full-precision matrix;
* ``bias`` (R,) fp32;
* the normalization's folded tensors, ``P_`` + the names and shapes its class declares
  (:meth:`nq_plugin.norm.FoldedNorm.shapes` of the kind's ``folded_type``; e.g. layer norm ``P_ln_gain``,
  ``P_ln_shift`` (R,); batch norm ``P_affine_scale``, ``P_affine_shift`` (norm_steps, R)).
"""
from __future__ import annotations

import sys
from typing import Dict, Tuple

import torch
from ..errors import UserError

FORMAT_NAME = "nq-packed"
FORMAT_VERSION = 1
WORD_BITS = 32
PACK_ORDER = "int32 words along the input dimension, column k -> word k // 32, bit k % 32 (LSB first)"
PADDING = "input dimension padded with 0 bits to a multiple of 32; padded columns are ignored"


class PackedFormatError(ValueError, UserError):
    """A packed model whose files do not agree with each other or with this format version."""


def num_words(columns: int) -> int:
    return (columns + WORD_BITS - 1) // WORD_BITS


_SHIFTS = torch.arange(WORD_BITS, dtype=torch.int64)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """(R, n) bool -> (R, ceil(n / 32)) int32, LSB first, zero padding."""
    rows, cols = bits.shape
    words = num_words(cols)
    padded = torch.zeros(rows, words * WORD_BITS, dtype=torch.int64, device=bits.device)
    padded[:, :cols] = bits.to(torch.int64)
    value = (padded.view(rows, words, WORD_BITS) << _SHIFTS.to(bits.device)).sum(-1)
    # two's complement: bit 31 set -> negative int32
    value = torch.where(value >= 2 ** 31, value - 2 ** 32, value)
    return value.to(torch.int32)


def unpack_bits(words: torch.Tensor, columns: int) -> torch.Tensor:
    """(R, W) int32 -> (R, columns) bool."""
    rows = words.shape[0]
    shifted = (words.to(torch.int64).unsqueeze(-1) >> _SHIFTS.to(words.device)) & 1
    return shifted.view(rows, -1)[:, :columns].bool()


def split_codes(weight: torch.Tensor, bits: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Quantized matrix -> (codes, per-row magnitude). Binary rows must be +-a_j, ternary rows
    in {-a_j, 0, a_j}; anything else is not a quantized matrix of that width."""
    magnitude = weight.abs().amax(dim=1)
    nonzero = weight != 0
    if bits == 1 and not bool(nonzero.all() | (magnitude == 0).all()):
        raise PackedFormatError("a binary matrix holds zeros: it was not quantized to 1 bit")
    same = (weight.abs() == magnitude.unsqueeze(1)) | ~nonzero
    if not bool(same.all()):
        raise PackedFormatError(f"rows of a {bits}-bit matrix must share one magnitude")
    return torch.sign(weight), magnitude


def pack_matrix(codes: torch.Tensor, bits: int) -> Dict[str, torch.Tensor]:
    """Codes in {-1, +1} (bits=1) or {-1, 0, +1} (bits=2) -> packed planes."""
    if bits == 1:
        return {"plus": pack_bits(codes > 0)}
    if bits == 2:
        return {"nonzero": pack_bits(codes != 0), "negative": pack_bits(codes < 0)}
    raise PackedFormatError(f"cannot pack {bits}-bit weights (1 or 2)")


_BYTE_BITS = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).to(torch.float32)


def _byte_table(words: torch.Tensor, table: torch.Tensor, columns: int) -> torch.Tensor:
    """Decode int32 words through a (256, 8) table indexed by their bytes. The words are
    little-endian in memory, so byte b of a word holds its bits 8b .. 8b+7, LSB first."""
    rows = words.shape[0]
    if sys.byteorder != "little":  # byte order of the view below: decode bit by bit instead
        bits = unpack_bits(words, columns).to(torch.int64)
        return table[:2, 0][bits]  # table[b, 0] is the value of bit 0 of byte b: 0 -> b=0, 1 -> b=1
    as_bytes = words.contiguous().view(torch.uint8).to(torch.int64)  # (R, 4W)
    return table.to(words.device)[as_bytes].reshape(rows, -1)[:, :columns]


def unpack_matrix(planes: Dict[str, torch.Tensor], bits: int, columns: int,
                  dtype=torch.float32) -> torch.Tensor:
    """Packed planes -> codes (R, columns) as ``dtype`` (one table lookup per plane)."""
    if bits == 1:
        return _byte_table(planes["plus"], (_BYTE_BITS * 2 - 1).to(dtype), columns)
    if bits == 2:
        nonzero = _byte_table(planes["nonzero"], _BYTE_BITS.to(dtype), columns)
        negative = _byte_table(planes["negative"], _BYTE_BITS.to(dtype), columns)
        return nonzero - 2 * nonzero * negative
    raise PackedFormatError(f"cannot unpack {bits}-bit weights (1 or 2)")


PLANES = {1: ("plus",), 2: ("nonzero", "negative"), 32: ()}


def word_planes(planes: Dict[str, torch.Tensor], bits: int):
    """(first, negative) contiguous int32 word planes of a packed 1- or 2-bit matrix, as the
    kernels take them: (plus, None) for 1 bit, (nonzero, negative) for 2 bits."""
    if bits not in (1, 2):
        raise PackedFormatError(f"no packed word planes for {bits}-bit weights (1 or 2)")
    names = PLANES[bits]
    return (planes[names[0]].contiguous(),
            planes[names[1]].contiguous() if len(names) > 1 else None)
WORD_SUFFIXES = tuple(f"_{plane}" for planes in PLANES.values() for plane in planes)
PRODUCTS = ("ih", "hh")


def plane_names(bits: int):
    try:
        return PLANES[bits]
    except KeyError:
        raise PackedFormatError(f"no packed planes for {bits}-bit weights (1, 2 or 32)") from None


def tensor_dtype(key: str) -> torch.dtype:
    """The dtype the format stores a layer tensor in: int32 words, fp32 everything else."""
    return torch.int32 if key.endswith(WORD_SUFFIXES) else torch.float32


def layer_shapes(meta: Dict[str, object], norm_steps: int) -> Dict[str, Tuple[int, ...]]:
    """Shape of every tensor of a packed layer, from its metadata (input_size, hidden_size,
    ih_bits, hh_bits, norm) and the file's ``norm_steps``."""
    from ..norm import normalization_class
    hidden, inp = int(meta["hidden_size"]), int(meta["input_size"])
    gates = 4 * hidden
    try:
        norm = normalization_class(str(meta["norm"]))
    except ValueError as err:
        raise PackedFormatError(f"packed layer with {err} (register it before loading)") from None
    shapes: Dict[str, Tuple[int, ...]] = {"bias": (gates,)}
    for name, cols in zip(PRODUCTS, (inp, hidden)):
        bits = int(meta[f"{name}_bits"])
        if bits == 32:
            shapes[f"{name}_weight"] = (gates, cols)
        else:
            for plane in plane_names(bits):
                shapes[f"{name}_{plane}"] = (gates, num_words(cols))
            shapes[f"{name}_scale"] = (gates,)
        for key, shape in norm.folded_shapes(gates, norm_steps).items():
            shapes[f"{name}_{key}"] = tuple(shape)
    return shapes


def quantization_config(metas, norm_steps: int, other_weights: str = "fp32"
                        ) -> Dict[str, object]:
    """The versioned ``quantization_config`` of a packed model's config.json.
    ``other_weights``: how the non-LSTM weights are stored ("fp32", or "fp16 ..." when the
    source checkpoint stored some in fp16; they are loaded into fp32 parameters either way)."""
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "word_bits": WORD_BITS,
            "pack_order": PACK_ORDER, "padding": PADDING, "scale": "fp32, one per row (folded)",
            "other_weights": other_weights, "norm_steps": norm_steps, "layers": list(metas)}
