"""A normalization's inference form: what a packed file stores beside the weights, and how it
is applied.

:meth:`nq_plugin.norm.Normalization.fold` returns one of these objects (eval-mode statistics
folded in); a packed layer rebuilds it from its buffers through the kind's ``folded_type``.
Each object owns its tensors' names and shapes (:meth:`FoldedNorm.shapes`), applying them in
Python (:meth:`FoldedNorm.apply`), its operation in the native recurrence
(:meth:`FoldedNorm.native`) and its coefficients in the fused packed step
(:meth:`FoldedNorm.fused_step_terms`), so the packed path asks the object and never the kind's
name.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .native_form import NativeForm


class FoldedNorm:
    """Base class: the named fp32 tensors of a folded normalization (``tensors``)."""

    #: tensor name -> shape, from the layer's features F and the statistics steps S
    @classmethod
    def shapes(cls, features: int, steps: int) -> Dict[str, Tuple[int, ...]]:
        raise NotImplementedError

    def __init__(self, tensors: Dict[str, torch.Tensor]):
        self.tensors = dict(tensors)

    def apply(self, y: torch.Tensor, t: int) -> torch.Tensor:
        """The folded form applied to y: one step (B, F) at step ``t``, or (T, B, F) steps from
        ``t``."""
        raise NotImplementedError

    def native(self) -> Optional[Tuple[NativeForm, Optional[torch.Tensor],
                                       Optional[torch.Tensor]]]:
        """The folded form as an operation of the native recurrence: (NativeForm, gain, shift)
        with gain / shift (F,) applied after it (None: none), or None when there is none (the
        packed model then steps in Python)."""
        return None

    def fused_step_terms(self, row_scale: torch.Tensor, layer_norm: bool):
        """The folded form as the fused packed step's coefficients (nq_plugin/packed: gates =
        a_x * N_x(B_x x) + a_h * N_h(B_h h) + shift, B the packed codes, ``row_scale`` their
        per-row scale): (a (S, F), shift (S, F), ln) with ``ln`` None or (row_scale, eps) for N
        the standardization of each gate block of row_scale * B y; None where the fused step
        cannot apply it (``layer_norm``: whether the kernel at hand standardizes blocks)."""
        return None


class FoldedIdentity(FoldedNorm):
    """Nothing to fold: none, or weight normalization (whose row scaling the packer folds into
    the packed matrix's per-row scale). N(y) = y."""

    @classmethod
    def shapes(cls, features, steps):
        return {}

    def apply(self, y, t):
        return y

    def native(self):
        return NativeForm(NativeForm.IDENTITY), None, None

    def fused_step_terms(self, row_scale, layer_norm):
        return row_scale[None], torch.zeros_like(row_scale)[None], None


class FoldedAffine(FoldedNorm):
    """A per-feature affine map y -> scale[slot] * y + shift[slot] (``affine_scale``,
    ``affine_shift``, (S, F), one row per statistics step; slot = min(t, S - 1)): batch
    normalization (S = its statistics steps) and PowerNorm (S = 1)."""

    @classmethod
    def shapes(cls, features, steps):
        return {"affine_scale": (steps, features), "affine_shift": (steps, features)}

    def apply(self, y, t):
        scale, shift = self.tensors["affine_scale"], self.tensors["affine_shift"]
        last = scale.shape[0] - 1
        if y.dim() == 2:
            slot = min(t, last)
            return torch.addcmul(shift[slot], y, scale[slot])
        slots = torch.clamp(torch.arange(t, t + y.shape[0], device=y.device), max=last)
        return torch.addcmul(shift[slots].unsqueeze(1), y, scale[slots].unsqueeze(1))

    def native(self):
        return (NativeForm(NativeForm.AFFINE, first=self.tensors["affine_scale"].contiguous(),
                           second=self.tensors["affine_shift"].contiguous()), None, None)

    def fused_step_terms(self, row_scale, layer_norm):
        return self.tensors["affine_scale"] * row_scale, self.tensors["affine_shift"], None


class FoldedSharedAffine(FoldedAffine):
    """:class:`FoldedAffine` with one statistics step whatever the layer's (PowerNorm)."""

    @classmethod
    def shapes(cls, features, steps):
        return super().shapes(features, 1)
