"""Reading and writing a packed model directory: ``model.safetensors`` + ``config.json``.

``config.json`` holds the model configuration and a versioned ``quantization_config`` (format
name and version, pack order, padding, and per LSTM layer its sizes, bits per matrix and norm).
Loading checks everything against everything: format version, that every tensor the layers need
is present with the right shape and dtype, that no file is truncated. A mismatch is a
:class:`PackedFormatError` naming the problem -- never silently wrong numbers.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Tuple

import torch

from .format import (FORMAT_NAME, FORMAT_VERSION, PackedFormatError, layer_shapes,
                     quantization_config, tensor_dtype)

__all__ = ["quantization_config", "save_packed", "check_tensors", "load_packed"]


def safetensors_bytes(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    """The safetensors serialization with its header's ``__metadata__`` keys in sorted order:
    the library writes them in hash-map order, which differs between runs, so the same tensors
    gave files with different SHA-256 (the zoo verifies packed copies it rebuilds by SHA-256).
    Only the order of keys inside the JSON header changes; its length and the data do not."""
    from safetensors.torch import save

    raw = save({k: v.detach().contiguous().clone() for k, v in tensors.items()},
               metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen: same keys and values
        raise AssertionError("safetensors header grew when its metadata was sorted")
    return raw[:8] + text + b" " * (n - len(text)) + raw[8 + n:]


def save_packed(outdir: str, tensors: Dict[str, torch.Tensor], config: Dict[str, object]) -> None:
    """Write both files, each to a temporary name renamed into place; the same tensors and
    configuration give byte-identical files."""
    from ..files import atomic_path, atomic_write_text
    data = safetensors_bytes(tensors, {"format": FORMAT_NAME,
                                       "format_version": str(FORMAT_VERSION)})
    with atomic_path(os.path.join(outdir, "model.safetensors")) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write_text(os.path.join(outdir, "config.json"),
                      json.dumps(config, indent=2, sort_keys=True))


def check_tensors(tensors: Dict[str, torch.Tensor], qconfig: Dict[str, object],
                  prefix: str) -> None:
    """Every tensor the packed layers need, with its shape and dtype."""
    for i, meta in enumerate(qconfig["layers"]):
        for key, shape in layer_shapes(meta, int(qconfig["norm_steps"])).items():
            name = f"{prefix}layers.{i}.{key}"
            if name not in tensors:
                raise PackedFormatError(f"model.safetensors lacks {name}, which config.json's "
                                        f"layer {i} needs: the files do not belong together")
            t = tensors[name]
            if tuple(t.shape) != tuple(shape):
                raise PackedFormatError(f"{name} has shape {tuple(t.shape)} but config.json "
                                        f"implies {tuple(shape)}: the files do not belong together")
            want = tensor_dtype(key)
            if t.dtype != want:
                raise PackedFormatError(f"{name} is {t.dtype}, the format stores {want}")


def load_packed(outdir: str, prefix: str = "decoder.lstm."
                ) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    config_path = os.path.join(outdir, "config.json")
    weights_path = os.path.join(outdir, "model.safetensors")
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: a packed model directory holds "
                                    "config.json and model.safetensors (written by nq-pack)")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise PackedFormatError(f"{config_path} is not valid JSON ({err})") from None
    q = config.get("quantization_config")
    if not isinstance(q, dict) or q.get("format") != FORMAT_NAME:
        raise PackedFormatError(f"{config_path} has no quantization_config of format "
                                f"{FORMAT_NAME!r}: not a model written by nq-pack")
    if q.get("format_version") != FORMAT_VERSION:
        raise PackedFormatError(
            f"{config_path}: packed format version {q.get('format_version')!r}, this nq_plugin "
            f"reads version {FORMAT_VERSION}; re-pack the checkpoint with this version's nq-pack")
    try:
        from safetensors.torch import load_file
        tensors = load_file(weights_path)
    except Exception as err:  # safetensors raises its own error types for a bad header/body
        raise PackedFormatError(f"{weights_path} cannot be read ({err}): truncated or corrupt; "
                                "copy or re-pack it") from None
    check_tensors(tensors, q, prefix)
    return tensors, config
