"""fairseq model ``nq_lstm_lm_packed``: the inference-only, bit-packed form of ``nq_lstm_lm``
written by ``nq-pack`` (its ``checkpoint.pt``), so that ``fairseq-eval-lm --path
OUTDIR/checkpoint.pt`` evaluates the packed model directly (carried state and incremental
decoding as the unpacked model). The checkpoint is self-contained: it holds the packed tensors
itself (not a reference to ``model.safetensors``) and its own format version, checked when the
model is built; torch's loader checks the tensors' shapes against the configuration."""
from dataclasses import dataclass

from fairseq.models import register_model
from omegaconf import OmegaConf

from ..diagnostics.log import GradNormLogger
from ..packed.cuda_graph import CUDAGraphLSTM
from ..packed.export import PackedExport
from ..packed.lstm import PackedNQLSTM
from .nq_lstm_lm import NQLSTMDecoder, NQLSTMLanguageModel, NQLSTMLMConfig
from .packed_config import PackedConfigMixin, build_packed_lstm, packed_config


@dataclass
class NQLSTMLMPackedConfig(NQLSTMLMConfig, PackedConfigMixin):
    pass


class PackedNQLSTMDecoder(NQLSTMDecoder):
    """Inference only: the gradient diagnostics of the source model's configuration are off."""

    def __init__(self, cfg, dictionary):
        super().__init__(cfg, dictionary)
        self.grad_norm_logger = GradNormLogger(0)

    @classmethod
    def from_decoder(cls, decoder: NQLSTMDecoder, cfg, dictionary):
        """The packed decoder of a trained ``decoder`` (its model configuration ``cfg``, a
        mapping), in eval mode, and the packed model's configuration (a dict)."""
        packed_lstm = PackedNQLSTM.from_lstm(decoder.lstm)
        packed_cfg = packed_config(cfg, "nq_lstm_lm_packed", packed_lstm)
        packed = cls(OmegaConf.create(packed_cfg), dictionary)
        packed.lstm = packed_lstm
        for name in ("embed_tokens", "output_projection"):
            module = getattr(decoder, name)
            if module is not None:
                getattr(packed, name).load_state_dict(module.state_dict())
        return packed.eval(), packed_cfg

    def run_lstm(self, x, state, t0: int, incremental: bool):
        """Generation steps on a GPU (one token per call, eval mode) replay a CUDA graph of the
        step (:class:`nq_plugin.packed.cuda_graph.CUDAGraphLSTM`, one recording per batch size
        and statistics slot); everything else runs the packed LSTM directly."""
        if incremental and x.is_cuda and x.shape[0] == 1 and not self.training:
            graphed = self.__dict__.get("_graphed")
            if graphed is None or graphed.module is not self.lstm:
                graphed = CUDAGraphLSTM(self.lstm)  # not a submodule: no state_dict entries
                self.__dict__["_graphed"] = graphed
            return graphed(x, state, t0)
        return self.lstm(x, state, t0=t0)

    def build_lstm(self, cfg, input_size):
        return build_packed_lstm(cfg)


@register_model("nq_lstm_lm_packed", dataclass=NQLSTMLMPackedConfig)
class NQLSTMPackedLanguageModel(NQLSTMLanguageModel):
    """Packed (1 or 2 bits per LSTM weight) inference model of :class:`NQLSTMLanguageModel`."""
    is_packed = True

    @classmethod
    def export(cls, model: NQLSTMLanguageModel, cfg, dictionary) -> PackedExport:
        """nq-pack's export of a trained language model: the packed decoder, its tensors under
        ``decoder.``."""
        decoder, config = PackedNQLSTMDecoder.from_decoder(model.decoder, cfg, dictionary)
        return PackedExport(decoder, config, "decoder.",
                            {"decoder._extra_state": {"carried": {}}})

    @classmethod
    def build_model(cls, cfg, task):
        return cls.remember_dictionary(cls(PackedNQLSTMDecoder(cfg, task.target_dictionary)),
                                       task)
