"""Where the gradient diagnostics go: JSON lines and fairseq's training log.

:class:`GradNormLogger` is held by the plugin's fairseq models (``--log-grad-norms N``). fairseq's
trainer pushes the update number to every submodule with ``set_num_updates``; on the first
training forward of every N-th update the logger hands the model a step observer per LSTM layer
(:class:`~nq_plugin.diagnostics.recorder.LayerRecorder`), and once the backward pass completes a
record it appends it to the JSON-lines file and, for the first layer, logs ``nq_gradh_first``,
``nq_gradh_last``, ``nq_lambda1``, ``nq_lambda2`` through fairseq's metrics. The model itself
does no I/O. With N = 0 it hands out nothing and nothing is hooked.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from torch import nn

from .record import GradNormRecord
from .recorder import LayerRecorder


class GradNormLogger(nn.Module):
    """Records every ``every``-th update (0: never) into the JSON-lines file ``path``.
    A module without parameters, so that fairseq's ``set_num_updates`` reaches it."""

    def __init__(self, every: int = 0, path: Optional[str] = None):
        super().__init__()
        if every < 0:
            raise ValueError(f"--log-grad-norms must be >= 0, got {every}")
        if every and not path:
            raise ValueError("--log-grad-norms needs a file: pass --grad-norm-log PATH")
        self.every, self.path = int(every), path
        self.num_updates = 0
        self.forwards = 0
        self._recorded_update: Optional[int] = None

    @classmethod
    def from_config(cls, cfg) -> "GradNormLogger":
        every = int(cfg.get("log_grad_norms", 0) or 0)
        if not every:
            return cls(0)
        path = cfg.get("grad_norm_log") or os.path.join(
            cfg.get("grad_norm_save_dir") or ".", "grad_norms.jsonl")
        return cls(every, path)

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = int(num_updates)

    def observer(self, training: bool) -> Optional[Callable]:
        """For the model's forward: ``observer(layer_index, layer)`` when this forward is to be
        recorded, else None."""
        if not training or self.every <= 0:
            return None
        self.forwards += 1
        update = self.num_updates
        if update % self.every or update == self._recorded_update:
            return None
        self._recorded_update = update
        forward = self.forwards - 1
        return lambda index, layer: LayerRecorder(layer, self.write, forward, index, update)

    def write(self, record: GradNormRecord) -> None:
        if record.layer == 0:
            try:
                from fairseq import metrics
            except ImportError:  # used outside fairseq: the JSON lines only
                metrics = None
            if metrics is not None:
                metrics.log_scalar("nq_gradh_first", record.grad_h[0], round=4)
                metrics.log_scalar("nq_gradh_last", record.grad_h[-1], round=4)
                if record.lambda1 is not None:
                    metrics.log_scalar("nq_lambda1", record.lambda1, round=3)
                    metrics.log_scalar("nq_lambda2", record.lambda2, round=3)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(record.to_json() + "\n")

    def extra_repr(self) -> str:
        return f"every={self.every}, path={self.path!r}" if self.every else "off"
