"""The record of the gradient diagnostics, defined once: written by
:mod:`nq_plugin.diagnostics.recorder` / :mod:`~nq_plugin.diagnostics.log`, read by
``nq-analyze``. One record per LSTM layer and recorded forward, one JSON object per line."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..norm.bounds import GATES  # noqa: F401  (re-exported: the gate names of every per-gate field)


@dataclass
class GradNormRecord:
    """``grad_h[t]`` = ||d loss / d h_t|| over the whole (B, H) gradient, for every step of the
    segment; the per-gate fields are dicts keyed by i, f, a, o."""

    grad_h: List[float]
    lambda1: Optional[float]  # None: the paper gives no bound for this normalization
    lambda2: Optional[float]
    forward: int  # index of the training forward (counted by the model)
    layer: int
    steps: int = 0
    update: Optional[int] = None  # fairseq's update number (set_num_updates); None in old logs
    quantizer: str = ""
    norm: str = ""
    gamma1: float = 0.0  # max |c_t| over the segment
    spectral_norms: Dict[str, float] = field(default_factory=dict)
    bound_factors: Optional[Dict[str, float]] = None
    sqrt_hidden: float = 0.0
    g: Optional[Dict[str, Dict[str, float]]] = None  # weight-norm gains per gate
    alpha: Optional[Dict[str, float]] = None  # quantizer scale per gate

    @classmethod
    def required(cls) -> List[str]:
        """Fields every record has (those without a default)."""
        return [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "GradNormRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    @property
    def x(self) -> int:
        """Training progress: the update number where known, else the forward index."""
        return self.forward if self.update is None else self.update
