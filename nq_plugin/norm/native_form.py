"""The operations of the native recurrence (``nq_plugin/csrc/recurrence.cpp``) a normalization
can be expressed as."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


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
