"""Normalization of one weight-input product W x of an LSTM layer (F = 4H gate features).

The LSTM normalizes its input term W_x x_t and its recurrent term W_h h_{t-1} separately
(Hou et al., NeurIPS 2019, eq. 3). A normalization either acts on the weight matrix (weight
normalization: the fused LSTM kernel can then run) or on the activations (layer, batch, power
normalization: the recurrent term needs a per-step loop). Each declares what the paper's size
accounting counts: parameters and inference statistics, in 32-bit numbers.
"""
from __future__ import annotations

from typing import Dict, Type

import torch
from torch import nn


class Normalization(nn.Module):
    """Base class: the identity. ``acts_on_weight`` norms rewrite the weight in :meth:`weight`;
    the others rewrite activations in :meth:`step` (one time step, (B, F)) and :meth:`sequence`
    (all steps at once, (T, B, F)), where ``t`` is the index of the (first) time step inside the
    BPTT window (per-step statistics depend on it)."""

    name = "none"
    acts_on_weight = False
    acts_on_activations = False

    def __init__(self, features: int, blocks: int = 4):
        super().__init__()
        if features <= 0 or features % blocks:
            raise ValueError(f"normalization needs features divisible by {blocks} gate blocks, "
                             f"got {features}")
        self.features = features
        self.blocks = blocks

    def init_from_weight(self, weight: torch.Tensor) -> None:
        """Called once with the initial latent weight (weight norm sets its gains from it)."""

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def begin_forward(self) -> None:
        """Called once at the start of every forward pass of the layer, before any step."""

    def step(self, y: torch.Tensor, t: int) -> torch.Tensor:
        return y

    def sequence(self, y: torch.Tensor, t0: int = 0) -> torch.Tensor:
        return y

    # The recurrent loop of the LSTM runs its own backward pass (nq_plugin.nn.recurrence): for the
    # recurrent term a normalization exposes its statistics step without the affine part
    # (gain, shift), and the matching backward.
    def affine(self):
        """(gain, shift) applied after :meth:`step_stats`; (None, None) when there is none."""
        return None, None

    def step_stats(self, z: torch.Tensor, t: int):
        """Normalize one step's (B, F) term without gain/shift; returns (z_hat, saved)."""
        return z, None

    def step_backward(self, grad_z_hat: torch.Tensor, z: torch.Tensor, z_hat: torch.Tensor,
                      saved, t: int) -> torch.Tensor:
        """Gradient w.r.t. z of :meth:`step_stats` given the gradient w.r.t. z_hat."""
        return grad_z_hat

    def counted_parameters(self) -> int:
        """Full-precision parameters counted by the paper's size formula."""
        return 0

    def counted_statistics(self) -> int:
        """Inference statistics (running mean/var, ...) counted by the paper's size formula."""
        return 0


NORMALIZATIONS: Dict[str, Type[Normalization]] = {"none": Normalization}


def register_normalization(cls):
    if cls.name in NORMALIZATIONS:
        raise ValueError(f"normalization {cls.name!r} is already registered")
    NORMALIZATIONS[cls.name] = cls
    return cls


def known_options() -> set:
    """Every keyword a registered normalization's ``from_options`` accepts."""
    import inspect
    names = set()
    for cls in NORMALIZATIONS.values():
        if hasattr(cls, "from_options"):
            for p in inspect.signature(cls.from_options).parameters.values():
                if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD
                                                 and p.name != "features"):
                    names.add(p.name)
    return names


def build_normalization(name: str, features: int, **options) -> Normalization:
    """Build ``none``, ``weight``, ``layer``, ``batch`` or ``power`` for F = ``features``.
    Options another normalization uses are ignored (one flat set of CLI options); an option no
    registered normalization knows (a typo such as ``bn_stat``) is an error naming the valid ones."""
    known = known_options()
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown normalization option(s) {unknown}; the options are: "
                        f"{', '.join(sorted(known))}")
    try:
        cls = NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization {name!r}; choose one of {', '.join(sorted(NORMALIZATIONS))}"
        ) from None
    return cls.from_options(features, **options) if hasattr(cls, "from_options") else cls(features)
