"""fairseq model ``nq_lstm_lm_packed``: the inference-only, bit-packed form of ``nq_lstm_lm``
written by ``nq-pack`` (its ``checkpoint.pt``), so that ``fairseq-eval-lm --path
OUTDIR/checkpoint.pt`` evaluates the packed model directly (carried state and incremental
decoding as the unpacked model)."""
import json
from dataclasses import dataclass, field

from fairseq.models import register_model

from ..packed.lstm import PackedNQLSTM
from .nq_lstm_lm import NQLSTMDecoder, NQLSTMLanguageModel, NQLSTMLMConfig


@dataclass
class NQLSTMLMPackedConfig(NQLSTMLMConfig):
    packed_layers: str = field(default="[]", metadata={
        "help": "JSON list of the packed LSTM layers (written by nq-pack)"})
    packed_norm_steps: int = field(default=1, metadata={
        "help": "time steps of folded batch-norm statistics (written by nq-pack)"})


class PackedNQLSTMDecoder(NQLSTMDecoder):
    def build_lstm(self, cfg, input_size):
        metas = json.loads(cfg.packed_layers)
        return PackedNQLSTM(metas, cfg.packed_norm_steps)


@register_model("nq_lstm_lm_packed", dataclass=NQLSTMLMPackedConfig)
class NQLSTMPackedLanguageModel(NQLSTMLanguageModel):
    """Packed (1 or 2 bits per LSTM weight) inference model of :class:`NQLSTMLanguageModel`."""

    @classmethod
    def build_model(cls, cfg, task):
        return cls(PackedNQLSTMDecoder(cfg, task.target_dictionary))
