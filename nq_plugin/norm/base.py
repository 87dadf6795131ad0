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
  :meth:`~Normalization.folded`, :meth:`~Normalization.folded_shapes`,
  :meth:`~Normalization.folded_steps`, :meth:`~Normalization.apply_folded`;
* diagnostics: :meth:`~Normalization.gate_bound_factors` (what replaces ||W_h*||_2 in the
  paper's gradient bound) and :meth:`~Normalization.diagnostic_fields`.

A normalization registered with :func:`register_normalization` that does not implement the
folding cannot be packed: ``nq-pack`` fails with :class:`FoldingNotSupported` instead of
evaluating it unnormalized.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Type

import torch
from torch import nn

from ..errors import UserError
from .options import NormOptions

Folded = Dict[str, torch.Tensor]


@dataclass
class NativeForm:
    """How the native recurrence (``nq_plugin/csrc/recurrence.cpp``) applies a normalization to
    one step's (B, F) term, before gain and shift: one of its operations

    * ``IDENTITY``: y_hat = y;
    * ``ROW_BLOCKS``: each row's 4 gate blocks standardized (mean / variance over the block);
    * ``BATCH``: each column standardized over the batch; ``first`` / ``second`` are the running
      mean and (unbiased) variance (S, F), updated in place at slot min(t, S - 1) with
      ``momentum``;
    * ``FIXED``: y_hat = (y - first[slot]) * second[slot] with (S, F) tensors;
    * ``POWER_RUNNING``: y_hat = y * second[0] (1 / psi), the step's (sum y^2, sum y_hat^2,
      count) added to ``accum_forward`` (3, F); backward (d - nu * y_hat) / psi with
      (sum d * y_hat, count) added to ``accum_backward`` (2, F) (PowerNorm in training);
    * ``POWER_WARMUP``: y_hat = y / sqrt(mean_B(y^2) + eps) with the exact backward, the
      statistics added to ``accum_forward`` (PowerNorm's warmup);
    * ``AFFINE``: y_hat = y * first[slot] + second[slot] (a folded form at inference, no
      backward).

    ``op`` is the operation's name; its number comes from the extension itself
    (``native_ops()``, from ``nq_plugin/csrc/native_ops.h``), looked up where it is called.
    """

    IDENTITY, ROW_BLOCKS, BATCH, FIXED = "IDENTITY", "ROW_BLOCKS", "BATCH", "FIXED"
    POWER_RUNNING, POWER_WARMUP, AFFINE = "POWER_RUNNING", "POWER_WARMUP", "AFFINE"
    op: str
    eps: float = 0.0
    first: Optional[torch.Tensor] = None
    second: Optional[torch.Tensor] = None
    momentum: float = 0.0
    accum_forward: Optional[torch.Tensor] = None
    accum_backward: Optional[torch.Tensor] = None
    nu: Optional[torch.Tensor] = None


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
    def _no_folding(self):
        return FoldingNotSupported(
            f"normalization {self.name!r} ({type(self).__name__}) has no inference folding, so "
            "it cannot be packed: implement folded(), folded_shapes(), apply_folded() (see "
            "nq_plugin.norm.base), or evaluate the unpacked checkpoint")

    def folded(self) -> Folded:
        """The inference form as named fp32 tensors (eval-mode statistics folded in), stored in
        a packed file next to the weights. What :meth:`weight` does is folded into the packed
        matrix's per-row scale by the packer, not here."""
        raise self._no_folding()

    def statistics_steps(self) -> int:
        """Time steps with their own inference statistics (and folded tensors); 1 when the
        statistics are shared over time or there are none."""
        return 1

    @classmethod
    def folded_shapes(cls, features: int, steps: int) -> Dict[str, Tuple[int, ...]]:
        """Shapes of :meth:`folded`'s tensors, from the layer's features and the packed file's
        ``norm_steps`` (checked when a packed file is loaded)."""
        raise FoldingNotSupported(f"normalization {cls.name!r} has no inference folding")

    @classmethod
    def apply_folded(cls, folded: Folded, y: torch.Tensor, t: int) -> torch.Tensor:
        """Apply the folded form to y: one step (B, F) at step ``t``, or (T, B, F) steps from
        ``t``."""
        raise FoldingNotSupported(f"normalization {cls.name!r} has no inference folding")

    @classmethod
    def native_folded(cls, folded: Folded):
        """The folded form as an operation of the native recurrence: (NativeForm, gain, shift)
        with gain / shift (F,) applied after it (None: none), or None when there is none (the
        packed model then steps in Python)."""
        return None

    @classmethod
    def fused_step_terms(cls, folded: Folded, row_scale: torch.Tensor, layer_norm: bool):
        """The folded form as the fused packed step's coefficients (nq_plugin/packed: gates =
        a_x * N_x(B_x x) + a_h * N_h(B_h h) + shift, B the packed codes, ``row_scale`` their
        per-row scale): (a (S, F), shift (S, F), layer_norm) with ``layer_norm`` None or
        (row_scale, eps) for N the standardization of each gate block of row_scale * B y;
        None where the fused step cannot apply it (``layer_norm``: whether the kernel at hand
        standardizes blocks; the default, a kind the fused step does not know)."""
        return None

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

    def folded(self):
        return {}

    @classmethod
    def folded_shapes(cls, features, steps):
        return {}

    @classmethod
    def apply_folded(cls, folded, y, t):
        return y

    def native_form(self, batch):
        return NativeForm(NativeForm.IDENTITY)

    @classmethod
    def native_folded(cls, folded):
        return NativeForm(NativeForm.IDENTITY), None, None

    @classmethod
    def fused_step_terms(cls, folded, row_scale, layer_norm):
        return row_scale[None], torch.zeros_like(row_scale)[None], None


class FoldedAffine:
    """Inference folding into a per-feature affine map y -> scale[slot] * y + shift[slot]
    (``affine_scale``, ``affine_shift``, one row per statistics step; slot = min(t, S - 1)):
    batch normalization and PowerNorm."""

    @classmethod
    def apply_folded(cls, folded, y, t):
        scale, shift = folded["affine_scale"], folded["affine_shift"]
        last = scale.shape[0] - 1
        if y.dim() == 2:
            slot = min(t, last)
            return torch.addcmul(shift[slot], y, scale[slot])
        slots = torch.clamp(torch.arange(t, t + y.shape[0], device=y.device), max=last)
        return torch.addcmul(shift[slots].unsqueeze(1), y, scale[slots].unsqueeze(1))

    @classmethod
    def native_folded(cls, folded):
        return (NativeForm(NativeForm.AFFINE, first=folded["affine_scale"].contiguous(),
                           second=folded["affine_shift"].contiguous()), None, None)

    @classmethod
    def fused_step_terms(cls, folded, row_scale, layer_norm):
        return folded["affine_scale"] * row_scale, folded["affine_shift"], None


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
