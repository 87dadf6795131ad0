"""How the loss-aware quantizers (lab, lat) read the optimizer's second moment.

A layer whose quantizer needs it holds a *second-moment source*: a callable that maps a latent
weight (a Parameter) to its second-moment estimate v (same shape) or None when the optimizer has
not stepped yet. :func:`attach_optimizer` installs one that reads Adam's ``exp_avg_sq`` from any
``torch.optim.Optimizer`` (fairseq's Adam included), holding only a weak reference to it.
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import nn


class OptimizerSecondMoment:
    """Reads ``optimizer.state[param][key]`` (default ``exp_avg_sq``, Adam's v)."""

    def __init__(self, optimizer: torch.optim.Optimizer, key: str = "exp_avg_sq"):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}; for a fairseq "
                "optimizer pass its .optimizer attribute")
        if "betas" not in optimizer.defaults:
            raise ValueError(
                f"{type(optimizer).__name__} keeps no second moment of the gradient; the loss-aware "
                "quantizers lab/lat need an Adam-type optimizer (Adam, AdamW, ...)")
        self._optimizer = weakref.ref(optimizer)
        self.key = key

    def __call__(self, param: torch.Tensor) -> Optional[torch.Tensor]:
        optimizer = self._optimizer()
        if optimizer is None:
            raise RuntimeError("the optimizer attached for lab/lat second moments no longer exists")
        return optimizer.state.get(param, {}).get(self.key)


def attach_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer,
                     key: str = "exp_avg_sq") -> int:
    """Give every layer of ``model`` that can use it a second-moment source reading ``optimizer``.
    Returns the number of layers that now have one."""
    source = OptimizerSecondMoment(optimizer, key)
    count = 0
    for module in model.modules():
        if hasattr(module, "set_second_moment_source"):
            module.set_second_moment_source(source)
            count += 1
    return count
