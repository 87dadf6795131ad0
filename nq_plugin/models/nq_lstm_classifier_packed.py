"""fairseq model ``nq_lstm_classifier_packed``: the inference-only, bit-packed form of
``nq_lstm_classifier`` written by ``nq-pack`` (its ``checkpoint.pt``), so that ``fairseq-validate
--task sequential_mnist --path OUTDIR/checkpoint.pt`` evaluates the packed model directly. The
learnt initial state and the full-precision classifier are kept as they are; the LSTM is the
packed one (:class:`nq_plugin.packed.PackedNQLSTM`, per-step batch-norm statistics folded)."""
from dataclasses import dataclass

import torch
from fairseq.models import register_model
from omegaconf import OmegaConf

from ..diagnostics.log import GradNormLogger
from ..packed.export import PackedExport
from ..packed.lstm import PackedNQLSTM
from .nq_lstm_classifier import NQLSTMClassifier, NQLSTMClassifierConfig
from .packed_config import PackedConfigMixin, build_packed_lstm, packed_config


@dataclass
class NQLSTMClassifierPackedConfig(NQLSTMClassifierConfig, PackedConfigMixin):
    pass


@register_model("nq_lstm_classifier_packed", dataclass=NQLSTMClassifierPackedConfig)
class NQLSTMPackedClassifier(NQLSTMClassifier):
    """Packed (1 or 2 bits per LSTM weight) inference model of :class:`NQLSTMClassifier`."""
    is_packed = True

    @classmethod
    def export(cls, model: NQLSTMClassifier, cfg, dictionary=None) -> PackedExport:
        """nq-pack's export of a trained classifier: the whole model (it has no dictionary)."""
        return PackedExport(*cls.from_classifier(model, cfg))

    def __init__(self, cfg, input_size: int):
        super().__init__(cfg, input_size)
        self.grad_norm_logger = GradNormLogger(0)  # inference only: no diagnostics

    @classmethod
    def from_classifier(cls, model: NQLSTMClassifier, cfg):
        """The packed classifier of a trained ``model`` (its configuration ``cfg``, a mapping),
        in eval mode, and the packed model's configuration (a dict)."""
        packed_lstm = PackedNQLSTM.from_lstm(model.lstm.eval())
        packed_cfg = packed_config(cfg, "nq_lstm_classifier_packed", packed_lstm)
        packed = cls(OmegaConf.create(packed_cfg), packed_lstm.input_size)
        packed.lstm = packed_lstm
        with torch.no_grad():
            packed.h0.copy_(model.h0)
            packed.c0.copy_(model.c0)
        packed.classifier.load_state_dict(model.classifier.state_dict())
        return packed.eval(), packed_cfg

    def build_lstm(self, cfg, input_size: int):
        return build_packed_lstm(cfg)

    def reference_init(self):
        """Nothing to initialise: every tensor comes from the packed checkpoint."""

    def run_lstm(self, x, state):
        return self.lstm(x, state)
