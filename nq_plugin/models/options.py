"""The fairseq configuration of the plugin's LSTM models, generated from the one declaration of
the LSTM options (:class:`nq_plugin.nn.options.LSTMOptions`): ``--quantizer``, ``--norm`` and
every normalization option appear on fairseq's command line with the help and choices declared
there; :func:`lstm_kwargs` turns a fairseq config back into ``NQLSTM`` keywords."""
from dataclasses import field, make_dataclass
from typing import Dict, Optional, get_type_hints

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..nn.options import LSTMOptions
from ..norm.options import field_choices


def _fairseq_field(f, hints):
    choices = field_choices(f)
    kind = ChoiceEnum(list(choices)) if choices else hints[f.name]
    return f.name, kind, field(default=f.default, metadata={"help": f.metadata["help"]})


_HINTS = get_type_hints(LSTMOptions)

NQLSTMConfigMixin = make_dataclass("NQLSTMConfigMixin", [
    ("hidden_size", int, field(default=512, metadata={"help": "LSTM hidden size H"})),
    ("num_layers", int, field(default=1, metadata={"help": "number of LSTM layers"})),
    *[_fairseq_field(f, _HINTS) for f in LSTMOptions.field_list()],
    ("log_grad_norms", int, field(default=0, metadata={
        "help": "every N updates, record ||d loss / d h_t|| for every step, gate spectral norms, "
                "the lambda bounds, g and alpha (0: off, no hooks at all)"})),
    ("grad_norm_log", Optional[str], field(default=None, metadata={
        "help": "JSON-lines file for --log-grad-norms (default: SAVE_DIR/grad_norms.jsonl)"})),
    # fairseq gives a model no other way to learn --save-dir; only the default path of the
    # diagnostics file is derived from it (the model writes nothing itself)
    ("grad_norm_save_dir", Optional[str], field(default=II("checkpoint.save_dir"), metadata={
        "help": "set from --save-dir: where --grad-norm-log defaults to"})),
], bases=(FairseqDataclass,))
NQLSTMConfigMixin.__module__ = __name__
NQLSTMConfigMixin.__doc__ = ("Options of the normalized, quantized LSTM shared by the plugin's "
                             "models (generated from nq_plugin.nn.options.LSTMOptions).")


def lstm_kwargs(cfg) -> Dict[str, object]:
    """NQLSTM keyword arguments from a config holding the :class:`LSTMOptions` fields (fairseq
    hands models an omegaconf DictConfig, not the dataclass)."""
    return LSTMOptions.from_config(cfg).as_kwargs()
