"""fairseq model ``nq_lstm_lm_packed``: the inference-only, bit-packed form of ``nq_lstm_lm``
written by ``nq-pack`` (its ``checkpoint.pt``), so that ``fairseq-eval-lm --path
OUTDIR/checkpoint.pt`` evaluates the packed model directly (carried state and incremental
decoding as the unpacked model). The checkpoint is self-contained: it holds the packed tensors
itself (not a reference to ``model.safetensors``) and its own format version, checked when the
model is built; torch's loader checks the tensors' shapes against the configuration."""
import json
from dataclasses import dataclass, field

from fairseq.models import register_model

from ..diagnostics.log import GradNormLogger
from ..packed.format import FORMAT_VERSION, PackedFormatError
from ..packed.lstm import PackedNQLSTM
from .nq_lstm_lm import NQLSTMDecoder, NQLSTMLanguageModel, NQLSTMLMConfig


@dataclass
class NQLSTMLMPackedConfig(NQLSTMLMConfig):
    packed_layers: str = field(default="[]", metadata={
        "help": "JSON list of the packed LSTM layers (written by nq-pack)"})
    packed_norm_steps: int = field(default=1, metadata={
        "help": "time steps of folded batch-norm statistics (written by nq-pack)"})
    packed_format_version: int = field(default=1, metadata={
        "help": "packed format version of this checkpoint (written by nq-pack; checkpoints "
                "from before the field are version 1)"})


class PackedNQLSTMDecoder(NQLSTMDecoder):
    """Inference only: the gradient diagnostics of the source model's configuration are off."""

    def __init__(self, cfg, dictionary):
        super().__init__(cfg, dictionary)
        self.grad_norm_logger = GradNormLogger(0)

    def build_lstm(self, cfg, input_size):
        version = int(cfg.get("packed_format_version", 1) or 1)
        if version != FORMAT_VERSION:
            raise PackedFormatError(
                f"this packed checkpoint is format version {version}; this nq_plugin reads "
                f"version {FORMAT_VERSION}: re-pack the original checkpoint with this nq-pack")
        metas = json.loads(cfg.packed_layers)
        return PackedNQLSTM(metas, cfg.packed_norm_steps)


@register_model("nq_lstm_lm_packed", dataclass=NQLSTMLMPackedConfig)
class NQLSTMPackedLanguageModel(NQLSTMLanguageModel):
    """Packed (1 or 2 bits per LSTM weight) inference model of :class:`NQLSTMLanguageModel`."""

    @classmethod
    def build_model(cls, cfg, task):
        return cls(PackedNQLSTMDecoder(cfg, task.target_dictionary))
