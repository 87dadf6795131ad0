"""The options of the normalizations, declared once.

:class:`NormOptions` is the single declaration: each normalization reads the fields it uses in
its ``from_options``; :class:`nq_plugin.nn.options.LSTMOptions` extends it with the LSTM's own
options, and the fairseq configuration, ``lstm_kwargs`` and ``nq-summary``'s command line are
generated from that. Field metadata: ``help`` (one line), and ``choices`` where the values are a
closed set. An option nobody declares is an error naming the valid ones.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional


def _closed(*values):
    return lambda: values


@dataclass
class NormOptions:
    """Options of the normalizations (each reads what it uses; see the classes in ``norm/``)."""

    bn_stats: str = field(default="shared", metadata={
        "help": "batch norm: population statistics shared over time steps or separate per step",
        "choices": _closed("shared", "separate")})
    bn_max_steps: int = field(default=100, metadata={
        "help": "batch norm with separate statistics: steps T_max with their own statistics "
                "(the last is reused beyond)"})
    bn_gain: float = field(default=0.1, metadata={"help": "initial gamma of batch/power norm"})
    layer_norm_gain: float = field(default=1.0, metadata={"help": "initial layer-norm gain"})
    pn_alpha: float = field(default=0.9, metadata={"help": "PowerNorm forward moving average"})
    pn_alpha_backward: float = field(default=0.9, metadata={
        "help": "PowerNorm backward moving average"})
    pn_warmup: int = field(default=0, metadata={
        "help": "PowerNorm: iterations using batch statistics first"})

    @classmethod
    def names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword arguments; an unknown one (a typo such as ``bn_stat``) is a
        TypeError naming the valid options. ``None`` means the default."""
        valid = cls.names()
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; the options are: {', '.join(valid)}")
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    @classmethod
    def from_config(cls, cfg) -> "NormOptions":
        """From any mapping / attribute bag holding (some of) the fields (a fairseq config, an
        argparse namespace, a checkpoint's model dict); missing fields take their defaults."""
        get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
        values: Dict[str, object] = {}
        for f in dataclasses.fields(cls):
            value = get(f.name, None)
            if value is not None:
                values[f.name] = _plain(value, f.default)
        return cls(**values)

    def as_kwargs(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def _plain(value, default):
    """A config value as the plain Python type of the field's default (fairseq hands enum-like
    strings and omegaconf scalars)."""
    if isinstance(default, str):
        return str(value)
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def field_choices(f: dataclasses.Field) -> Optional[tuple]:
    choices = f.metadata.get("choices")
    return tuple(choices()) if choices is not None else None
