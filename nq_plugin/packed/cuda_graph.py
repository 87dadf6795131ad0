"""CUDA graphs for the packed LSTM: one recorded launch per call instead of a few kernels per step.

A generation step at batch 1 is a few microseconds of GPU work spread over ~10 kernel launches
(the packed product, the folded normalization, the gates); Python and the launches cost more
than the work. :class:`CUDAGraphLSTM` records ``module(x, state, t0)`` once per input shape into
a ``torch.cuda.CUDAGraph`` and afterwards copies the inputs into the recorded buffers and
replays it.

What a recording depends on, and so its key: the shape and dtype of x, whether a state is given,
and -- for per-step batch-norm statistics -- ``min(t0, norm_steps - 1)``, the first statistics
slot the call reads (``FoldedAffine.apply`` clamps slots at the last one, so all calls
from that slot on read the same slots). Every recording is dropped when a buffer of the module
moves (``.to``, ``.half``) or is written in place (``load_state_dict``; tracked by the tensors'
version counters), since the module derives cached tables from them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..derived import DerivedCache

State = Optional[Tuple[torch.Tensor, torch.Tensor]]


class _Recording:
    def __init__(self, module: nn.Module, x: torch.Tensor, state: State, t0: int, warmup: int):
        self.x = x.clone()
        self.state = None if state is None else (state[0].clone(), state[1].clone())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):  # compiles the Triton kernels, settles the allocator
                module(self.x, self.state, t0)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out, (self.h, self.c) = module(self.x, self.state, t0)

    def __call__(self, x: torch.Tensor, state: State):
        self.x.copy_(x)
        if state is not None:
            self.state[0].copy_(state[0])
            self.state[1].copy_(state[1])
        self.graph.replay()
        return self.out.clone(), (self.h.clone(), self.c.clone())


class CUDAGraphLSTM(nn.Module):
    """Wraps a :class:`~nq_plugin.packed.PackedNQLSTM` (or any module with the same
    ``forward(x, state=None, t0=0) -> out, (h, c)``) for inference on CUDA; other devices and
    autograd-enabled calls run the module directly."""

    def __init__(self, module: nn.Module, warmup: int = 2):
        super().__init__()
        self.module = module
        self.warmup = warmup
        # one recording per key (see the module doc), all dropped when the module's tensors
        # change: nq_plugin.derived, the package's one cache of derived state
        self._recordings = DerivedCache()

    def reset(self):
        """Forget every recording (after the module's weights were replaced)."""
        self._recordings.clear()

    def forward(self, x: torch.Tensor, state: State = None, t0: int = 0):
        if not x.is_cuda or torch.is_grad_enabled() and x.requires_grad:
            return self.module(x, state, t0)
        slot = min(t0, max(int(getattr(self.module, "norm_steps", 1)) - 1, 0))
        key = (tuple(x.shape), x.dtype, state is None, slot)
        recording = self._recordings.get(
            self.module, key, None, lambda: _Recording(self.module, x, state, slot, self.warmup))
        return recording(x, state)
