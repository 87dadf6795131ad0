"""Parameter groups with learning-rate scales, and second-moment wiring, from tagged parameters.

:class:`nq_plugin.nn.NQLSTMLayer` tags its latent weight matrices: ``nq_latent_scale`` (the
paper's 2/a = 2 sqrt(H) when its quantizer is BinaryConnect/TerConnect, else 1.0) and
``nq_layer`` (a weak reference to the layer, for the lab/lat second moment). fairseq hands the
optimizer one flat parameter list; these tags are how the optimizer finds them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch

LRScale = Union[None, str, float]


def parse_lr_scale(value: Optional[str]) -> LRScale:
    """``none``/None -> None, ``auto`` -> "auto", a number -> float; anything else is an error."""
    if value is None or str(value).lower() == "none":
        return None
    if str(value).lower() == "auto":
        return "auto"
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"--lstm-lr-scale must be none, auto or a positive number, got "
                         f"{value!r}") from None
    if scale <= 0:
        raise ValueError(f"--lstm-lr-scale must be positive, got {scale}")
    return scale


def require_tags(params: List[torch.nn.Parameter], optimizer: str) -> None:
    """The tags must have reached the optimizer. fairseq's ``--fp16`` / ``--bf16`` (and the
    memory-efficient variants) hand it fp32 copies without them, which silently dropped the
    paper's learning-rate scale and starved lab/lat of the second moment: refuse instead."""
    if not any(getattr(p, "nq_layer", None) is not None for p in params):
        raise ValueError(
            f"{optimizer} received no parameter of an nq_plugin LSTM (their tags are missing). "
            "fairseq's --fp16 / --bf16 / --memory-efficient-fp16 / --memory-efficient-bf16 hand "
            "the optimizer untagged fp32 copies, which would drop the learning-rate scale of the "
            "latent LSTM weights and the second moment of lab/lat: train in fp32 (drop those "
            f"flags). {optimizer} is meant for models with an nq_plugin LSTM.")


def lr_scaled_param_groups(params: List[torch.nn.Parameter], scale: LRScale
                           ) -> List[Dict[str, object]]:
    """Group 0: parameters at the base rate; further groups: latent LSTM weights at
    ``lr_scale`` times the base rate."""
    if scale is None:
        return [{"params": params, "lr_scale": 1.0}]
    by_scale: Dict[float, List[torch.nn.Parameter]] = {1.0: []}
    for p in params:
        tag = getattr(p, "nq_latent_scale", None)
        s = 1.0 if tag is None else (tag if scale == "auto" else float(scale))
        by_scale.setdefault(float(s), []).append(p)
    return [{"params": ps, "lr_scale": s} for s, ps in by_scale.items() if ps or s == 1.0]


def attach_second_moments(params: List[torch.nn.Parameter], source) -> None:
    """Give every layer owning one of ``params`` the second-moment source (None detaches)."""
    seen = set()
    for p in params:
        ref = getattr(p, "nq_layer", None)
        layer = ref() if ref is not None else None
        if layer is not None and id(layer) not in seen:
            seen.add(id(layer))
            layer.set_second_moment_source(source)
