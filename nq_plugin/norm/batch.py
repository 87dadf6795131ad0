"""Recurrent batch normalization (Cooijmans et al., ICLR 2017) of a gate pre-activation term."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .base import NativeForm, Normalization, register_normalization
from .folded import FoldedAffine
from .bounds import per_feature_gate_factors
from ..logs import LogOnce

_log_once = LogOnce(logging.getLogger(__name__))


def ema_update(buffer: torch.Tensor, values: torch.Tensor, slots: torch.Tensor,
               momentum: float) -> None:
    """Apply ``buffer[s] = (1 - m) buffer[s] + m v`` for each (s, v) in order, in closed form.

    ``values`` is (T, F), ``slots`` (T,) non-decreasing. Equals T sequential updates, like
    torch's BatchNorm applied step by step, so the vectorized and the per-step paths agree."""
    keep = 1.0 - momentum
    for slot in torch.unique_consecutive(slots).tolist():
        rows = values[slots == slot]
        n = rows.shape[0]
        # weight of the i-th of n sequential updates in the final value: m (1-m)^(n-1-i)
        weights = momentum * keep ** torch.arange(n - 1, -1, -1, dtype=values.dtype,
                                                  device=values.device)
        buffer[slot].mul_(keep ** n).add_(weights @ rows)


@register_normalization
class BatchNorm(Normalization):
    """``batch`` -- batch normalization over the minibatch at each time step:
    N(y_t) = gamma * (y_t - mean_B(y_t)) / sqrt(var_B(y_t) + eps) + beta (per feature).

    Inference uses population statistics, either ``shared`` over all time steps or ``separate``
    per time step t < T_max (``max_steps``), step T_max - 1's reused beyond (Cooijmans et al.).
    gamma starts at 0.1 (Cooijmans et al.), beta at 0 (the LSTM bias b already shifts). Running
    statistics follow torch's BatchNorm (momentum 0.1, unbiased variance), one update per step.
    """

    name = "batch"
    inference_options = ("bn_stats", "bn_max_steps")
    acts_on_activations = True
    eps = 1e-5
    momentum = 0.1

    def __init__(self, features: int, blocks: int = 4, stats: str = "shared",
                 max_steps: int = 100, gain_init: float = 0.1):
        super().__init__(features, blocks)
        if stats not in ("shared", "separate"):
            raise ValueError(f"unknown batch-norm statistics {stats!r}; choose shared or separate")
        if stats == "separate" and max_steps < 1:
            raise ValueError(f"--bn-max-steps must be >= 1, got {max_steps}")
        self.stats = stats
        self.max_steps = max_steps if stats == "separate" else 1
        self.gain = nn.Parameter(torch.full((features,), float(gain_init)))
        self.shift = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(self.max_steps, features))
        self.register_buffer("running_var", torch.ones(self.max_steps, features))

    @classmethod
    def from_options(cls, features, options):
        return cls(features, stats=options.bn_stats, max_steps=options.bn_max_steps,
                   gain_init=options.bn_gain)

    def slot(self, t: int) -> int:
        return min(t, self.max_steps - 1)

    def batch_statistics(self, batch: int) -> bool:
        """Whether this call normalizes with the batch's statistics (training) or the running
        ones. Batch statistics need more than one sample per step: from one, the variance is 0
        and its unbiased estimate (the running variance) NaN. A batch of one sequence after
        batches of several (the last, short batch of an epoch under language_modeling's
        --max-tokens) uses the running statistics, said once in the log, and leaves them as
        they are; a training run whose batches hold one sequence from the start is refused,
        with what to do instead."""
        if not self.training:
            return False
        if batch >= 2:
            self._trained_on_batches = True
            return True
        if getattr(self, "_trained_on_batches", False):
            _log_once("batch-of-one", "nq_plugin: a training batch holds one sequence; batch "
                      "norm uses its running statistics for it (one sample has no variance)",
                      logging.WARNING)
            return False
        raise ValueError(
            "batch normalization in training needs at least 2 sequences per batch (got 1): "
            "the statistics of one sample have zero variance and make the running variance "
            "NaN. Use --batch-size 2 or more (bptt_lm: columns), or --norm layer / weight, "
            "which work at batch 1")

    def step(self, y, t):
        batch_stats = self.batch_statistics(y.shape[0])
        s = self.slot(t)
        return F.batch_norm(y, self.running_mean[s], self.running_var[s], self.gain,
                            self.shift, batch_stats, self.momentum, self.eps)

    def affine(self):
        return self.gain, self.shift

    def step_stats(self, z, t):
        batch_stats = self.batch_statistics(z.shape[0])
        s = self.slot(t)
        z_hat, save_mean, save_invstd = torch.native_batch_norm(
            z, None, None, self.running_mean[s], self.running_var[s], batch_stats,
            self.momentum, self.eps)
        return z_hat, (save_mean, save_invstd, batch_stats)

    def native_form(self, batch):
        batch_stats = self.batch_statistics(batch)
        if self.training and not batch_stats:
            return None  # a batch of one in training: the Python loop, running statistics
        if batch_stats:
            return NativeForm(NativeForm.BATCH, eps=self.eps, first=self.running_mean,
                              second=self.running_var, momentum=self.momentum)
        return NativeForm(NativeForm.FIXED, first=self.running_mean.contiguous(),
                          second=torch.rsqrt(self.running_var + self.eps))

    def step_backward(self, grad_z_hat, z, z_hat, saved, t):
        s = self.slot(t)
        save_mean, save_invstd, training = saved
        grad, _, _ = torch.ops.aten.native_batch_norm_backward(
            grad_z_hat, z, None, self.running_mean[s], self.running_var[s], save_mean,
            save_invstd, training, self.eps, [True, False, False])
        return grad

    def sequence(self, y, t0=0):
        steps = y.shape[0]
        batch_stats = self.batch_statistics(y.shape[1])
        slots = torch.clamp(torch.arange(t0, t0 + steps, device=y.device), max=self.max_steps - 1)
        if batch_stats:
            mean = y.mean(1)
            var = y.var(1, unbiased=False)
            with torch.no_grad():
                b = y.shape[1]
                unbiased = var * (b / (b - 1)) if b > 1 else var
                ema_update(self.running_mean, mean.detach(), slots, self.momentum)
                ema_update(self.running_var, unbiased.detach(), slots, self.momentum)
        else:
            mean = self.running_mean[slots]
            var = self.running_var[slots]
        yhat = (y - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return torch.addcmul(self.shift, yhat, self.gain)

    def counted_parameters(self):
        return 2 * self.features

    def counted_statistics(self):
        return 2 * self.features * self.max_steps

    # inference: y -> scale * y + shift per feature (and per step for separate statistics),
    # scale = gamma / sqrt(var + eps), shift = beta - mean * scale
    folded_type = FoldedAffine

    def fold(self):
        scale = self.gain.detach() / torch.sqrt(self.running_var + self.eps)
        return FoldedAffine({"affine_scale": scale.float().contiguous(),
                             "affine_shift": (self.shift.detach()
                                              - self.running_mean * scale).float()})

    def statistics_steps(self):
        return self.max_steps


    bound_on_squares = True

    def gate_bound_factors(self, w_q, gate_norms, block_sigmas):
        """Proposition 4: max_j (g_j / sigma_j) ||W_h*||_2, sigma_j the feature's running
        standard deviation (averaged over the per-step statistics)."""
        var = self.running_var.mean(0)
        return per_feature_gate_factors(gate_norms,
                                        self.gain.detach().abs() / torch.sqrt(var + self.eps))

    def extra_repr(self):
        return f"features={self.features}, stats={self.stats}, max_steps={self.max_steps}"
