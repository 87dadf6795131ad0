"""Normalization of one weight-input product W x of an LSTM layer (F = 4H gate features).

The LSTM normalizes its input term W_x x_t and its recurrent term W_h h_{t-1} separately
(Hou et al., NeurIPS 2019, eq. 3). A normalization either rewrites the weight matrix
(:meth:`Normalization.weight`, weight normalization: the fused LSTM kernel can then run) or the
activations (``acts_on_activations``: layer, batch, power normalization; the recurrent term
needs a per-step loop). Each class owns everything about its kind, so that nothing else in the
package branches on its name:

* training: :meth:`~Normalization.step`, :meth:`~Normalization.sequence` and, for the loop with
  the hand-written backward, :meth:`~Normalization.affine`, :meth:`~Normalization.step_stats`,
  :meth:`~Normalization.step_backward`;
* size accounting (the paper's tables): :meth:`~Normalization.counted_parameters`,
  :meth:`~Normalization.counted_statistics`;
* inference folding (what a packed file stores and how it is applied):
  :meth:`~Normalization.fold` returns a :class:`~nq_plugin.norm.folded.FoldedNorm` of the
  kind's ``folded_type``, which owns its tensors' shapes, applying them, and their forms in the
  native recurrence and the fused packed step; :meth:`~Normalization.statistics_steps`;
* diagnostics: :meth:`~Normalization.gate_bound_factors` (what replaces ||W_h*||_2 in the
  paper's gradient bound) and :meth:`~Normalization.diagnostic_fields`.

A normalization registered with :func:`register_normalization` that does not implement the
folding cannot be packed: ``nq-pack`` fails with :class:`FoldingNotSupported` instead of
evaluating it unnormalized.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Type

import torch
from torch import nn

from ..errors import UserError
from .folded import FoldedIdentity, FoldedNorm
from .native_form import NativeForm
from .options import NormOptions


class FoldingNotSupported(NotImplementedError, UserError):
    """A normalization without an inference folding: it cannot be packed."""


class BoundNotDefined(NotImplementedError):
    """A normalization for which the paper gives no gradient bound."""


class Normalization(nn.Module):
    """Base class of the normalizations (``name`` is the registry key). The defaults are those of
    a normalization that acts on the activations; methods a subclass must provide to be packed
    or bounded raise :class:`FoldingNotSupported` / :class:`BoundNotDefined`. ``t`` is the index
    of the (first) time step inside the BPTT window (per-step statistics depend on it)."""

    name: Optional[str] = None
    acts_on_activations = False
    #: the options (of :class:`NormOptions`) that shape a trained model of this kind, recorded
    #: with published models (e.g. batch norm's statistics layout)
    inference_options: Tuple[str, ...] = ()
    #: the bound of the paper's Proposition 4 is on squared norms (batch statistics)
    bound_on_squares = False

    def __init__(self, features: int, blocks: int = 4):
        super().__init__()
        if features <= 0 or features % blocks:
            raise ValueError(f"normalization needs features divisible by {blocks} gate blocks, "
                             f"got {features}")
        self.features = features
        self.blocks = blocks

    @classmethod
    def from_options(cls, features: int, options: NormOptions) -> "Normalization":
        """Build from the shared :class:`NormOptions` (reading the fields this kind uses)."""
        return cls(features)

    # -- training -----------------------------------------------------------------------------
    def init_from_weight(self, weight: torch.Tensor) -> None:
        """Called once with the initial latent weight (weight norm sets its gains from it)."""

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The (quantized) weight as the product uses it."""
        return weight

    def begin_forward(self) -> None:
        """Called once at the start of every forward pass of the layer, before any step."""

    def step(self, y: torch.Tensor, t: int) -> torch.Tensor:
        """Normalize one step's (B, F) term (autograd path)."""
        return y

    def sequence(self, y: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """Normalize all steps' (T, B, F) terms at once (autograd path)."""
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

    def native_form(self, batch: int) -> Optional[NativeForm]:
        """What :meth:`step_stats` / :meth:`step_backward` do, as an operation of the native
        recurrence, for this forward (mode and statistics as they are now); None: the native
        recurrence cannot run it and the layer uses the Python loop."""
        return None

    # -- size accounting (Hou et al., Tables 1-4) ---------------------------------------------
    def counted_parameters(self) -> int:
        """Full-precision parameters counted by the paper's size formula."""
        return 0

    def counted_statistics(self) -> int:
        """Inference statistics (running mean/var, ...) counted by the paper's size formula."""
        return 0

    # -- inference folding (the packed format) -------------------------------------------------
    #: the class of :meth:`fold`'s result (:mod:`nq_plugin.norm.folded`), by which a packed
    #: layer rebuilds it from its buffers; None: the kind cannot be packed
    folded_type: Optional[Type[FoldedNorm]] = None

    def fold(self) -> FoldedNorm:
        """The inference form (eval-mode statistics folded in): named fp32 tensors, stored in a
        packed file next to the weights, and how they are applied. What :meth:`weight` does is
        folded into the packed matrix's per-row scale by the packer, not here."""
        raise self.no_folding()

    @classmethod
    def no_folding(cls) -> FoldingNotSupported:
        return FoldingNotSupported(
            f"normalization {cls.name!r} ({cls.__name__}) has no inference folding, so it "
            "cannot be packed: give it a folded_type and fold() (see nq_plugin.norm.folded), "
            "or evaluate the unpacked checkpoint")

    @classmethod
    def folded_from(cls, tensors: Dict[str, torch.Tensor]) -> FoldedNorm:
        """The folded form of this kind from a packed layer's tensors."""
        if cls.folded_type is None:
            raise cls.no_folding()
        return cls.folded_type(tensors)

    @classmethod
    def folded_shapes(cls, features: int, steps: int) -> Dict[str, Tuple[int, ...]]:
        """Shapes of :meth:`fold`'s tensors, from the layer's features and the packed file's
        ``norm_steps`` (checked when a packed file is loaded)."""
        if cls.folded_type is None:
            raise cls.no_folding()
        return cls.folded_type.shapes(features, steps)

    def statistics_steps(self) -> int:
        """Time steps with their own inference statistics (and folded tensors); 1 when the
        statistics are shared over time or there are none."""
        return 1

    # -- diagnostics (Hou et al., Propositions 1-4) ----------------------------------------------
    def gate_bound_factors(self, w_q: torch.Tensor, gate_norms: Dict[str, float],
                           block_sigmas: List[float]) -> Dict[str, float]:
        """Per gate (i, f, a, o), what replaces ||W_h*||_2 of the quantized recurrent matrix
        ``w_q`` in the gradient bound; ``gate_norms`` are those spectral norms and
        ``block_sigmas`` the mean standard deviation of each gate block of W_h h over the
        recorded segment."""
        raise BoundNotDefined(f"the paper gives no gradient bound for normalization "
                              f"{self.name!r}")

    def diagnostic_fields(self) -> Dict[str, object]:
        """Extra fields of a gradient-diagnostics record (weight norm: its gains g)."""
        return {}


class IdentityOnActivations:
    """A normalization that leaves the product's activations unchanged: none, or weight
    normalization (which rewrites the matrix; at inference the packer folds its row scaling into
    the packed scale). Nothing to fold, the identity in the native recurrence."""

    folded_type = FoldedIdentity

    def fold(self):
        return FoldedIdentity({})

    def native_form(self, batch):
        return NativeForm(NativeForm.IDENTITY)


class NoNormalization(IdentityOnActivations, Normalization):
    """``none`` -- the identity, N(y) = y (the unnormalized LSTM; Proposition 1's bound)."""

    name = "none"

    def gate_bound_factors(self, w_q, gate_norms, block_sigmas):
        return dict(gate_norms)


NORMALIZATIONS: Dict[str, Type[Normalization]] = {"none": NoNormalization}


def register_normalization(cls):
    """Register a :class:`Normalization` subclass under its ``name`` (``--norm NAME``)."""
    if not cls.name or cls.name in NORMALIZATIONS:
        raise ValueError(f"normalization name {cls.name!r} is empty or already registered")
    NORMALIZATIONS[cls.name] = cls
    return cls


def normalization_class(name: str) -> Type[Normalization]:
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization {name!r}; choose one of {', '.join(sorted(NORMALIZATIONS))}"
        ) from None


def build_normalization(name: str, features: int, options: Optional[NormOptions] = None,
                        **kwargs) -> Normalization:
    """Build ``none``, ``weight``, ``layer``, ``batch``, ``power`` (or a registered kind) for
    F = ``features``, from ``options`` or the same fields as keywords. Options another
    normalization uses are ignored (one flat set); an unknown option (a typo such as
    ``bn_stat``) is an error naming the valid ones."""
    if options is None:
        options = NormOptions.from_kwargs(**kwargs)
    elif kwargs:
        raise TypeError("pass either options or keyword options, not both")
    return normalization_class(name).from_options(features, options)
