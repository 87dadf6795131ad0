"""The options of the normalized, quantized LSTM, declared once.

:class:`LSTMOptions` = the quantizer, the normalization and latent clipping, plus every
normalization option of :class:`nq_plugin.norm.NormOptions`. The fairseq models' configuration
(``nq_plugin.models.options``), their ``lstm_kwargs`` and ``nq-summary``'s command line are
generated from these fields; :class:`nq_plugin.nn.NQLSTM` accepts them as keywords and refuses
any other, naming the valid ones.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..norm import NORMALIZATIONS, NormOptions
from ..quant import QUANTIZERS


@dataclass
class LSTMOptions(NormOptions):
    """Quantizer, normalization and their options of an :class:`nq_plugin.nn.NQLSTM`."""

    quantizer: str = field(default="fp", metadata={
        "help": "weight quantizer of the LSTM matrices (fp: none)",
        "choices": lambda: sorted(QUANTIZERS)})
    norm: str = field(default="none", metadata={
        "help": "normalization of each weight-input product",
        "choices": lambda: sorted(NORMALIZATIONS)})
    latent_clip: Optional[float] = field(default=None, metadata={
        "help": "clip latent LSTM weights to [-c, c] with gradient cancellation "
                "(BinaryConnect); off by default"})

    def norm_options(self) -> NormOptions:
        return NormOptions(**{name: getattr(self, name) for name in NormOptions.names()})

    @classmethod
    def field_list(cls):
        """The fields in declaration order: quantizer, norm, the norm options, latent_clip."""
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        order = ["quantizer", "norm"] + NormOptions.names() + ["latent_clip"]
        return [by_name[n] for n in order]
