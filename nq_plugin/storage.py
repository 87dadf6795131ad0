"""Compact storage of a checkpoint's tensors: what a zoo ``model.pt`` holds on disk.

A model state maps names to fp32 tensors. Stored compactly, a tensor ``name`` becomes one of
the :data:`ENCODINGS` below; the state then carries ``STORAGE_KEY`` = ``{"version": 1,
"tensors": {name: encoding}}``, and the model's ``load_state_dict`` (every loading path:
fairseq-eval-lm, the Hub loader, ``nq-zoo``) decodes it back to fp32 with
:func:`decode_state` before loading. A state without that record is returned as it is.

* ``int8_rows``: ``name`` holds int8 codes, ``name@scale`` one fp32 scale per row (the first
  dimension): w = code * scale, scale = max|row| / 127.
* ``int6_rows`` / ``int5_rows`` / ``int4_rows``: the same per-row rule with codes in
  [-(2^(b-1) - 1), 2^(b-1) - 1], bit-packed: ``name`` holds uint8 bytes of the codes plus
  2^(b-1) - 1 (b bits each, least significant bit first, row-major), ``name@scale`` the row
  scales, ``name@shape`` the tensor's shape (int64).
* ``bfloat16`` / ``float16``: ``name`` holds the tensor in that type; w = float(stored).

Which encoding a tensor gets is the storage plan's choice (:func:`storage_plan`): a quantized
weight gets the smallest encoding its quantizer declares exact for evaluation
(:meth:`nq_plugin.quant.base.Quantizer.compact`: the quantized weights of the decoded tensor
equal those of the original, bit for bit); other large floating-point tensors (embeddings,
softmax, a full-precision LSTM) get the plan's lossy ``floats`` encoding, whose cost the zoo
measures; everything else stays fp32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

STORAGE_KEY = "nq_plugin.storage"
STORAGE_VERSION = 1
SCALE_SUFFIX = "@scale"
SHAPE_SUFFIX = "@shape"
LARGE_TENSOR = 1 << 16  # elements: smaller float tensors (biases, norm gains) stay fp32


class StorageError(ValueError):
    """A stored state whose storage record cannot be decoded."""


class Encoding:
    """One way to store a floating-point tensor. ``encode`` returns the stored parts (suffix ->
    tensor; suffix "" is the tensor's own name), ``decode`` the fp32 tensor, ``step`` the parts
    with the entries of ``mask`` moved one representable value in the direction ``toward``
    (+1 / -1): what :meth:`Quantizer.compact` uses to repair entries whose quantized value
    changed."""

    name = ""
    suffixes: Tuple[str, ...] = ("",)  # the parts a stored tensor has
    words = ""                          # what a model card calls it

    def encode(self, t: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, parts: Dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def step(self, parts: Dict[str, torch.Tensor], mask: torch.Tensor,
             toward: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def shape(self, parts: Dict[str, torch.Tensor]) -> Tuple[int, ...]:
        """The decoded tensor's shape, without decoding it."""
        return tuple(parts[""].shape)


class Int8Rows(Encoding):
    """w = code * scale_row, code = round(w / scale_row) in [-127, 127],
    scale_row = max|w_row| / 127 (1 for an all-zero row)."""

    name = "int8_rows"
    words = "int8 with one fp32 scale per row"
    suffixes = ("", SCALE_SUFFIX)
    qmax = 127

    def codes(self, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(codes as int16, of ``t``'s shape; fp32 scale per row)."""
        rows = t.detach().float().reshape(t.shape[0], -1)
        scale = rows.abs().amax(dim=1) / float(self.qmax)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        codes = torch.round(rows / scale[:, None]).clamp_(-self.qmax, self.qmax)
        return codes.to(torch.int16).reshape(t.shape), scale.contiguous()

    def encode(self, t):
        codes, scale = self.codes(t)
        return {"": codes.to(torch.int8).contiguous(), SCALE_SUFFIX: scale}

    def stored_codes(self, parts: Dict[str, torch.Tensor]) -> torch.Tensor:
        return parts[""].to(torch.int16)

    def with_codes(self, parts: Dict[str, torch.Tensor], codes: torch.Tensor):
        return dict(parts, **{"": codes.to(torch.int8)})

    def decode(self, parts):
        codes, scale = self.stored_codes(parts), parts[SCALE_SUFFIX]
        shape = (codes.shape[0],) + (1,) * (codes.dim() - 1)
        return codes.float() * scale.reshape(shape)

    def step(self, parts, mask, toward):
        codes = self.stored_codes(parts) + mask.to(torch.int16) * toward.to(torch.int16)
        return self.with_codes(parts, codes.clamp_(-self.qmax, self.qmax))


class PackedIntRows(Int8Rows):
    """:class:`Int8Rows` with ``bits``-bit codes: w = code * scale_row, code in
    [-(2^(bits-1) - 1), 2^(bits-1) - 1], scale_row = max|w_row| / (2^(bits-1) - 1); the codes
    are stored bit-packed (``bits`` / 8 bytes an entry, plus the row scales and the shape)."""

    suffixes = ("", SCALE_SUFFIX, SHAPE_SUFFIX)

    def __init__(self, bits: int):
        self.bits, self.qmax, self.name = bits, 2 ** (bits - 1) - 1, f"int{bits}_rows"
        self.words = f"{bits}-bit integers (bit-packed) with one fp32 scale per row"

    def with_codes(self, parts, codes):
        flat = (codes.reshape(-1).to(torch.int32) + self.qmax)
        planes = (flat[:, None] >> torch.arange(self.bits, dtype=torch.int32)) & 1
        stream = planes.to(torch.uint8).reshape(-1)
        stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).reshape(-1, 8)
        packed = (stream.to(torch.int32) << torch.arange(8, dtype=torch.int32)).sum(1)
        return dict(parts, **{"": packed.to(torch.uint8),
                              SHAPE_SUFFIX: torch.tensor(codes.shape, dtype=torch.int64)})

    def encode(self, t):
        codes, scale = self.codes(t)
        return self.with_codes({SCALE_SUFFIX: scale}, codes)

    def shape(self, parts):
        return tuple(int(n) for n in parts[SHAPE_SUFFIX].tolist())

    def stored_codes(self, parts):
        shape = self.shape(parts)
        count = math.prod(shape)
        packed = parts[""].to(torch.int32)
        if packed.dim() != 1 or packed.numel() != -(-count * self.bits // 8):
            raise StorageError(f"{self.name}: {packed.numel()} bytes cannot hold a tensor of "
                               f"shape {shape}: the file is damaged or was edited")
        stream = ((packed[:, None] >> torch.arange(8, dtype=torch.int32)) & 1).reshape(-1)
        planes = stream[:count * self.bits].reshape(count, self.bits)
        flat = (planes << torch.arange(self.bits, dtype=torch.int32)).sum(1) - self.qmax
        return flat.to(torch.int16).reshape(shape)


class Cast(Encoding):
    """w = float(stored), stored = w rounded to ``dtype``."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype, self.words = name, dtype, name

    def encode(self, t):
        return {"": t.detach().to(self.dtype).contiguous()}

    def decode(self, parts):
        return parts[""].float()

    def step(self, parts, mask, toward):
        t = parts[""]
        inf = torch.full_like(t, float("inf"))
        moved = torch.nextafter(t, torch.where(toward > 0, inf, -inf))
        return {"": torch.where(mask, moved, t)}


ENCODINGS: Dict[str, Encoding] = {e.name: e for e in (
    Int8Rows(), PackedIntRows(6), PackedIntRows(5), PackedIntRows(4),
    Cast("bfloat16", torch.bfloat16), Cast("float16", torch.float16))}
LOSSY_CHOICES = ("fp32",) + tuple(ENCODINGS)  # a plan's ``floats``


def encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise StorageError(f"unknown tensor encoding {name!r}; this nq_plugin knows "
                           f"{', '.join(sorted(ENCODINGS))}: upgrade nq_plugin") from None


@dataclass
class Stored:
    """A tensor as stored: its encoding's name and parts."""
    encoding: str
    parts: Dict[str, torch.Tensor]

    def decode(self) -> torch.Tensor:
        return encoding(self.encoding).decode(self.parts)


def encode_state(weights: Dict[str, Any], plan: Dict[str, Stored]) -> Dict[str, Any]:
    """``weights`` with every tensor the plan names replaced by its stored parts, and the
    storage record; names absent from the plan are kept as they are."""
    out = {k: v for k, v in weights.items() if k != STORAGE_KEY and k not in plan}
    for name, stored in sorted(plan.items()):
        for suffix, part in stored.parts.items():
            out[name + suffix] = part
    if plan:
        out[STORAGE_KEY] = {"version": STORAGE_VERSION,
                            "tensors": {k: plan[k].encoding for k in sorted(plan)}}
    return out


def stored_tensors(weights: Dict[str, Any]) -> Iterator[Tuple[str, Stored]]:
    """(name, :class:`Stored`) of each tensor a stored state's record lists."""
    record = weights.get(STORAGE_KEY)
    if record is None:
        return
    if not isinstance(record, dict) or record.get("version") != STORAGE_VERSION or \
            not isinstance(record.get("tensors"), dict):
        raise StorageError(f"the checkpoint's storage record ({STORAGE_KEY}) is not version "
                           f"{STORAGE_VERSION} of nq_plugin's compact storage: it was written by "
                           "another nq_plugin version (upgrade) or edited")
    for name, enc in record["tensors"].items():
        parts = {suffix: weights.get(name + suffix) for suffix in encoding(enc).suffixes}
        missing = [name + s for s, t in parts.items() if not torch.is_tensor(t)]
        if missing:
            raise StorageError(f"the checkpoint lists {name} as stored {enc} but lacks "
                               f"{', '.join(missing)}: the file is damaged or was edited")
        yield name, Stored(enc, parts)


def decode_state(weights: Dict[str, Any]) -> Dict[str, Any]:
    """The model state with every stored tensor decoded to fp32 (a state without a storage
    record is returned unchanged)."""
    if STORAGE_KEY not in weights:
        return weights
    out = {k: v for k, v in weights.items() if k != STORAGE_KEY}
    for name, stored in list(stored_tensors(weights)):
        for suffix in stored.parts:
            if suffix:
                out.pop(name + suffix)
        out[name] = stored.decode()
    return out


def tensor_shape(weights: Dict[str, Any], name: str) -> Optional[Tuple[int, ...]]:
    """The shape of tensor ``name`` of a (possibly stored) state once decoded; None if absent."""
    for stored_name, stored in stored_tensors(weights):
        if stored_name == name:
            return encoding(stored.encoding).shape(stored.parts)
    value = weights.get(name)
    return tuple(value.shape) if torch.is_tensor(value) else None


def storage_encodings(weights: Dict[str, Any]) -> Dict[str, str]:
    """name -> encoding of a stored state's tensors ({} when it has no record)."""
    return {name: s.encoding for name, s in stored_tensors(weights)}


def latent_weights(model: torch.nn.Module) -> Iterator[Tuple[str, torch.Tensor, Any]]:
    """(state-dict name, latent weight, quantizer) of every quantized weight of ``model``: the
    modules that hold them say so with ``latent_weights()``."""
    for prefix, module in model.named_modules():
        pairs = getattr(module, "latent_weights", None)
        if callable(pairs):
            for name, weight, quantizer in pairs():
                yield (f"{prefix}.{name}" if prefix else name), weight, quantizer


def quantized_digest(model: torch.nn.Module, names=None) -> str:
    """sha256 of the quantized weights as evaluation computes them (eval mode), over every
    quantized weight of ``model`` (or those of ``names``): equal for two models whose quantized
    LSTMs are identical."""
    import hashlib
    h = hashlib.sha256()
    for name, weight, quantizer in sorted(latent_weights(model), key=lambda x: x[0]):
        if names is not None and name not in names:
            continue
        was = quantizer.training
        quantizer.eval()
        try:
            with torch.no_grad():
                q = quantizer.quantize(weight.detach()).contiguous()
        finally:
            quantizer.train(was)
        h.update(f"{name}\0{tuple(q.shape)}\0".encode())
        h.update(q.float().numpy().tobytes())
    return h.hexdigest()


@dataclass
class StoragePlan:
    """How a model's tensors are stored: ``stored`` (name -> :class:`Stored`); ``exact``, the
    names of the quantized weights whose quantizer output the encoding keeps bit for bit;
    ``lossy``, the names stored with the plan's lossy ``floats`` encoding."""
    stored: Dict[str, Stored]
    exact: List[str]
    lossy: List[str]

    def record(self) -> Dict[str, Dict[str, List[str]]]:
        """{"exact" | "lossy": {encoding: [names]}}, for the zoo's manifest."""
        out: Dict[str, Dict[str, List[str]]] = {"exact": {}, "lossy": {}}
        for kind, names in (("exact", self.exact), ("lossy", self.lossy)):
            for name in sorted(names):
                out[kind].setdefault(self.stored[name].encoding, []).append(name)
        return out


def storage_plan(model: torch.nn.Module, floats: str = "fp32",
                 exact: Tuple[str, ...] = ("int8_rows", "bfloat16")) -> StoragePlan:
    """How each tensor of ``model``'s state is stored: every quantized weight in the first of
    ``exact`` its quantizer keeps exact; every other floating-point tensor of at least
    :data:`LARGE_TENSOR` elements (a full-precision LSTM's weights included) in ``floats``
    (lossy; "fp32" keeps them); the rest fp32 (absent from the plan)."""
    if floats not in LOSSY_CHOICES:
        raise StorageError(f"floats must be one of {', '.join(LOSSY_CHOICES)}, got {floats!r}")
    stored: Dict[str, Stored] = {}
    for name, weight, quantizer in latent_weights(model):
        compact = quantizer.compact(weight.detach(), exact) if exact else None
        if compact is not None:
            stored[name] = compact
    kept = sorted(stored)
    lossy = []
    if floats != "fp32":
        for name, t in model.state_dict().items():
            if name not in stored and torch.is_tensor(t) and t.is_floating_point() \
                    and t.numel() >= LARGE_TENSOR:
                stored[name] = Stored(floats, ENCODINGS[floats].encode(t))
                lossy.append(name)
    return StoragePlan(stored, kept, sorted(lossy))


def stored_bytes(weights: Dict[str, Any]) -> int:
    """Bytes of a state's tensors as stored."""
    return sum(t.numel() * t.element_size() for t in weights.values() if torch.is_tensor(t))
