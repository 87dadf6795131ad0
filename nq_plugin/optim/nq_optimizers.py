"""fairseq optimizers ``nq_adam`` and ``nq_sgd``: Adam / SGD that

* scale the learning rate of the latent LSTM weights (appendix A.2 of Hou et al., NeurIPS 2019:
  for BinaryConnect / TerConnect the 8 weight matrices get lr x 2/a = 2 sqrt(H), a = 1/sqrt(H)
  being the bound of their uniform initialisation), through a parameter group whose multiplier
  survives fairseq's ``set_lr`` and every LR scheduler; gradient clipping (fairseq's
  --clip-norm) happens before, on the unscaled gradients. (With SGD this equals scaling the
  gradient; with Adam it does not, which is why it is a learning-rate group.)
* give the loss-aware quantizers ``lab`` / ``lat`` their second-moment statistics (Adam's
  exp_avg_sq) through :class:`nq_plugin.quant.OptimizerSecondMoment`.

``--lstm-lr-scale``: ``none`` (default), ``auto`` (2 sqrt(H) for layers quantized with bc/tc,
1 otherwise) or a number applied to all latent LSTM weights.
"""

import logging
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from omegaconf import II

from ..quant import OptimizerSecondMoment
from .param_groups import (attach_second_moments, lr_scaled_param_groups, parse_lr_scale,
                           require_tags)

logger = logging.getLogger(__name__)

LR_SCALE_HELP = ("learning-rate multiplier of the latent LSTM weights: none, auto "
                 "(2*sqrt(H) for bc/tc layers, as the paper) or a number")


class ScaledLRMixin:
    """``set_lr``/``get_lr`` that keep each parameter group's ``lr_scale`` (fairseq's own
    ``set_lr`` gives every group the same rate)."""

    def get_lr(self):
        group = self.param_groups[0]
        return group["lr"] / group.get("lr_scale", 1.0)

    def set_lr(self, lr):
        for group in self.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """fairseq's clipping, plus the quantized-LSTM hint when the gradient norm is no longer
        finite (fairseq then stops with "gradients are Nan/Inf" and no advice)."""
        norm = super().clip_grad_norm(max_norm, aggregate_norm_fn)
        if not bool(torch.isfinite(norm).all()):
            logger.error(
                "nq_plugin: the gradient norm is not finite (%s). Quantized LSTMs without "
                "normalization explode through time (the recurrent Jacobian's bound grows with "
                "the quantized W_h): train with --norm weight, layer or batch; lower --lr; and "
                "see where it happens with --log-grad-norms 1 and nq-analyze "
                "(docs/diagnostics.md). With --norm layer or batch, a term with no variance "
                "(W_h h0 for an initial state shared by every sequence, over inputs that start "
                "blank as sequential MNIST's) has an unbounded normalization gradient: add "
                "--init-state-noise 0.1 (the sequence classifier)", float(norm))
        return norm


@dataclass
class NQAdamConfig(FairseqAdamConfig):
    lstm_lr_scale: str = field(default="none", metadata={"help": LR_SCALE_HELP})


@register_optimizer("nq_adam", dataclass=NQAdamConfig)
class NQAdam(ScaledLRMixin, FairseqAdam):
    """fairseq's Adam (decoupled weight decay) with per-group learning-rate scales for the
    latent LSTM weights, feeding Adam's second moment to lab/lat quantizers."""

    def __init__(self, cfg: NQAdamConfig, params):
        params: List[torch.nn.Parameter] = list(params)
        require_tags(params, "nq_adam")
        super().__init__(cfg, lr_scaled_param_groups(params, parse_lr_scale(cfg.lstm_lr_scale)))
        self.set_lr(cfg.lr[0])
        attach_second_moments(params, OptimizerSecondMoment(self.optimizer))


@dataclass
class NQSGDConfig(FairseqDataclass):
    momentum: float = field(default=0.0, metadata={"help": "momentum factor"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay"})
    lstm_lr_scale: str = field(default="none", metadata={"help": LR_SCALE_HELP})
    lr: List[float] = II("optimization.lr")


@register_optimizer("nq_sgd", dataclass=NQSGDConfig)
class NQSGD(ScaledLRMixin, FairseqOptimizer):
    """SGD (torch.optim.SGD) with per-group learning-rate scales for the latent LSTM weights,
    e.g. the paper's word-level BinaryConnect/TerConnect runs (lr 20, --lstm-lr-scale auto)."""

    def __init__(self, cfg: NQSGDConfig, params):
        super().__init__(cfg)
        params = list(params)
        require_tags(params, "nq_sgd")
        groups = lr_scaled_param_groups(params, parse_lr_scale(cfg.lstm_lr_scale))
        self._optimizer = torch.optim.SGD(groups, **self.optimizer_config)
        self.set_lr(cfg.lr[0])
        attach_second_moments(params, None)  # lab/lat then fail with a clear message

    @property
    def optimizer_config(self):
        return {"lr": self.cfg.lr[0], "momentum": self.cfg.momentum,
                "weight_decay": self.cfg.weight_decay}

    @property
    def supports_flat_params(self):
        return False
