"""Power normalization (Shen et al., ICML 2020, Algorithm 2) of a gate pre-activation term."""
from __future__ import annotations

import torch
from torch import nn

from .base import NativeForm, Normalization, register_normalization
from .folded import FoldedSharedAffine
from .bounds import per_feature_gate_factors


class _ApproximateBackward(torch.autograd.Function):
    """x_hat = x / psi in the forward pass; in the backward pass (eqs. 11-12 of Shen et al.)
    dL/dx = (dL/dx_hat - nu * x_hat) / psi. Accumulates Lambda's sum(dL/dx_hat * x_hat) and the
    sample count into ``accum`` (a (2, F) buffer) for the next update of nu."""

    @staticmethod
    def forward(ctx, x, psi, nu, accum):
        x_hat = x / psi
        ctx.save_for_backward(x_hat, psi, nu)
        ctx.accum = accum
        return x_hat

    @staticmethod
    def backward(ctx, grad):
        x_hat, psi, nu = ctx.saved_tensors
        flat_g = grad.reshape(-1, grad.shape[-1])
        flat_x = x_hat.reshape(-1, x_hat.shape[-1])
        with torch.no_grad():
            ctx.accum[0].add_((flat_g * flat_x).sum(0).to(ctx.accum.dtype))
            ctx.accum[1].add_(flat_g.shape[0])
        return (grad - nu * x_hat) / psi, None, None, None


@register_normalization
class PowerNorm(Normalization):
    """``power`` -- PowerNorm (Shen et al., ICML 2020, Algorithm 2), per feature:
    N(y) = gamma * y / psi + beta with psi^2 the running quadratic mean of y.

    Training: the forward divides by the running psi of the previous iteration (eq. 8), the
    backward uses the approximate gradient dL/dy = (dL/dy_hat - nu * y_hat) / psi (eqs. 11-12).
    After each iteration psi^2 <- alpha psi^2 + (1 - alpha) psi_B^2 and
    nu <- nu (1 - (1 - alpha_b) Gamma) + (1 - alpha_b) Lambda, Gamma = mean(y_hat^2),
    Lambda = mean(dL/dy_hat * y_hat) (eq. 13). One iteration = one forward of the layer, the
    statistics pooled over its time steps and batch (a recurrent term is normalized by the same
    psi at every step). During the first ``warmup`` iterations the batch quadratic mean of each
    step is used with the exact gradient (PN-V), while psi^2 accumulates. Inference divides by
    the running psi. gamma starts at ``gain_init`` (0.1 as for batch norm), beta at 0.
    """

    name = "power"
    acts_on_activations = True
    eps = 1e-5

    def __init__(self, features: int, blocks: int = 4, alpha: float = 0.9,
                 alpha_backward: float = 0.9, warmup: int = 0, gain_init: float = 0.1):
        super().__init__(features, blocks)
        for label, a in (("alpha", alpha), ("alpha_backward", alpha_backward)):
            if not 0.0 < a < 1.0:
                raise ValueError(f"PowerNorm {label} must lie in (0, 1), got {a}")
        if warmup < 0:
            raise ValueError(f"PowerNorm warmup must be >= 0, got {warmup}")
        self.alpha = alpha
        self.alpha_backward = alpha_backward
        self.warmup = warmup
        self.gain = nn.Parameter(torch.full((features,), float(gain_init)))
        self.shift = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_phi", torch.ones(features))  # psi^2
        self.register_buffer("nu", torch.zeros(features))
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        # pending statistics of the last iteration: sum y^2, sum y_hat^2, count (forward) and
        # sum dL/dy_hat * y_hat, count (backward)
        self.register_buffer("forward_accum", torch.zeros(3, features))
        self.register_buffer("backward_accum", torch.zeros(2, features))

    @classmethod
    def from_options(cls, features, options):
        return cls(features, alpha=options.pn_alpha, alpha_backward=options.pn_alpha_backward,
                   warmup=options.pn_warmup, gain_init=options.bn_gain)

    @property
    def in_warmup(self) -> bool:
        return int(self.iterations) < self.warmup

    @torch.no_grad()
    def begin_forward(self):
        """Fold the last iteration's statistics into psi^2 and nu, then count a new iteration."""
        fwd, bwd = self.forward_accum, self.backward_accum
        count = fwd[2, 0].item()
        if count > 0:
            self.running_phi.mul_(self.alpha).add_((1 - self.alpha) * fwd[0] / count)
            if bwd[1, 0].item() > 0:
                gamma = fwd[1] / count
                lam = bwd[0] / bwd[1]
                a = 1 - self.alpha_backward
                self.nu.mul_(1 - a * gamma).add_(a * lam)
            fwd.zero_()
            bwd.zero_()
        if self.training:
            self.iterations.add_(1)

    def _record(self, y, y_hat):
        with torch.no_grad():
            flat = y.detach().reshape(-1, self.features)
            flat_hat = y_hat.detach().reshape(-1, self.features)
            self.forward_accum[0].add_(flat.pow(2).sum(0))
            self.forward_accum[1].add_(flat_hat.pow(2).sum(0))
            self.forward_accum[2].add_(flat.shape[0])

    def _normalize(self, y, batch_dim):
        if not self.training:
            y_hat = y * torch.rsqrt(self.running_phi + self.eps)
        elif int(self.iterations) <= self.warmup:  # iterations was incremented by begin_forward
            y_hat = y * torch.rsqrt(y.pow(2).mean(batch_dim, keepdim=True) + self.eps)
            self._record(y, y_hat)
        else:
            psi = torch.sqrt(self.running_phi + self.eps)
            y_hat = _ApproximateBackward.apply(y, psi, self.nu, self.backward_accum)
            self._record(y, y_hat)
        return torch.addcmul(self.shift, y_hat, self.gain)

    def affine(self):
        return self.gain, self.shift

    def step_stats(self, z, t):
        if not self.training:
            psi = torch.sqrt(self.running_phi + self.eps)
            return z / psi, ("eval", psi)
        if int(self.iterations) <= self.warmup:
            mode, psi = "warmup", torch.sqrt(z.pow(2).mean(0) + self.eps)
        else:
            mode, psi = "running", torch.sqrt(self.running_phi + self.eps)
        z_hat = z / psi
        self._record(z, z_hat)
        return z_hat, (mode, psi)

    def native_form(self, batch):
        """Inference: a fixed per-feature scale. Training: the warmup's batch statistics, or the
        running psi with the approximate backward, both adding to the accumulators."""
        zero = torch.zeros_like(self.running_phi)[None]
        inv_psi = torch.rsqrt(self.running_phi + self.eps)[None]
        if not self.training:
            return NativeForm(NativeForm.FIXED, first=zero, second=inv_psi)
        if int(self.iterations) <= self.warmup:  # iterations was incremented by begin_forward
            return NativeForm(NativeForm.POWER_WARMUP, eps=self.eps,
                              accum_forward=self.forward_accum)
        return NativeForm(NativeForm.POWER_RUNNING, eps=self.eps, first=zero, second=inv_psi,
                          accum_forward=self.forward_accum,
                          accum_backward=self.backward_accum, nu=self.nu)

    def step_backward(self, grad_z_hat, z, z_hat, saved, t):
        mode, psi = saved
        if mode == "eval":
            return grad_z_hat / psi
        if mode == "warmup":  # exact gradient through the batch statistic (PN-V)
            return (grad_z_hat - z_hat * (grad_z_hat * z_hat).mean(0)) / psi
        self.backward_accum[0].add_((grad_z_hat * z_hat).sum(0))
        self.backward_accum[1].add_(grad_z_hat.shape[0])
        return (grad_z_hat - self.nu * z_hat) / psi

    def step(self, y, t):
        return self._normalize(y, 0)

    def sequence(self, y, t0=0):
        return self._normalize(y, 1)

    def counted_parameters(self):
        return 2 * self.features

    def counted_statistics(self):
        return self.features

    # inference: y -> gamma / psi * y + beta per feature (psi from the running quadratic mean)
    folded_type = FoldedSharedAffine

    def fold(self):
        scale = self.gain.detach() / torch.sqrt(self.running_phi + self.eps)
        return FoldedSharedAffine({"affine_scale": scale.float().unsqueeze(0).contiguous(),
                                   "affine_shift": self.shift.detach().float().unsqueeze(0)
                                   .clone()})

    bound_on_squares = True

    def gate_bound_factors(self, w_q, gate_norms, block_sigmas):
        """Proposition 4 with the running quadratic mean psi^2 in place of the variance:
        max_j (g_j / psi_j) ||W_h*||_2."""
        return per_feature_gate_factors(
            gate_norms, self.gain.detach().abs() / torch.sqrt(self.running_phi + self.eps))

    def extra_repr(self):
        return (f"features={self.features}, alpha={self.alpha}, "
                f"alpha_backward={self.alpha_backward}, warmup={self.warmup}")
