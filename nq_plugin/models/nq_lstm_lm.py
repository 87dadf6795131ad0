"""fairseq language model ``nq_lstm_lm``: embedding (or fixed one-hot input), NQLSTM, dropout,
full-precision softmax (optionally tied to the input embedding).

Hidden state: with the ``bptt_lm`` task each batch is the next segment of B contiguous streams,
and (h, c) is carried from one segment to the next (truncated BPTT, as Hou et al. and Cooijmans
et al.); the carried states (one per data split) are part of the model's state dict, so a resumed
run continues exactly. With fairseq's ``language_modeling`` task every block starts from zeros.
Incremental decoding keeps (h, c) and the step index (for per-step batch-norm statistics).
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II
from fairseq.models import (FairseqIncrementalDecoder, FairseqLanguageModel, register_model,
                            register_model_architecture)
from torch import nn

from ..nn import NQLSTM
from ..norm import NORMALIZATIONS
from ..quant import QUANTIZERS
from .checked_loading import CheckedLoading

logger = logging.getLogger(__name__)

QUANTIZER_CHOICES = ChoiceEnum(sorted(QUANTIZERS))
NORM_CHOICES = ChoiceEnum(sorted(NORMALIZATIONS))


@dataclass
class NQLSTMConfigMixin(FairseqDataclass):
    """Options of the normalized, quantized LSTM shared by the plugin's models."""

    hidden_size: int = field(default=512, metadata={"help": "LSTM hidden size H"})
    num_layers: int = field(default=1, metadata={"help": "number of LSTM layers"})
    quantizer: QUANTIZER_CHOICES = field(
        default="fp", metadata={"help": "weight quantizer of the LSTM matrices (fp: none)"})
    norm: NORM_CHOICES = field(
        default="none", metadata={"help": "normalization of each weight-input product"})
    bn_stats: ChoiceEnum(["shared", "separate"]) = field(
        default="shared", metadata={"help": "batch norm: population statistics shared over time "
                                            "steps or separate per step"})
    bn_max_steps: int = field(
        default=100, metadata={"help": "batch norm with separate statistics: steps T_max with "
                                       "their own statistics (the last is reused beyond)"})
    bn_gain: float = field(default=0.1, metadata={"help": "initial gamma of batch/power norm"})
    layer_norm_gain: float = field(default=1.0, metadata={"help": "initial layer-norm gain"})
    pn_alpha: float = field(default=0.9, metadata={"help": "PowerNorm forward moving average"})
    pn_alpha_backward: float = field(
        default=0.9, metadata={"help": "PowerNorm backward moving average"})
    pn_warmup: int = field(
        default=0, metadata={"help": "PowerNorm: iterations using batch statistics first"})
    latent_clip: Optional[float] = field(
        default=None, metadata={"help": "clip latent LSTM weights to [-c, c] with gradient "
                                        "cancellation (BinaryConnect); off by default"})
    log_grad_norms: int = field(default=0, metadata={
        "help": "every N training forwards, record ||d loss / d h_t|| for every step, gate "
                "spectral norms, the lambda bounds, g and alpha (0: off, no hooks at all)"})
    grad_norm_log: Optional[str] = field(default=None, metadata={
        "help": "JSON-lines file for --log-grad-norms (default: SAVE_DIR/grad_norms.jsonl)"})
    grad_norm_save_dir: Optional[str] = field(default=II("checkpoint.save_dir"), metadata={
        "help": "set from --save-dir: where --grad-norm-log defaults to"})


def lstm_kwargs(cfg) -> Dict[str, object]:
    """NQLSTM keyword arguments from a config holding the :class:`NQLSTMConfigMixin` fields
    (fairseq hands models an omegaconf DictConfig, not the dataclass)."""
    return dict(quantizer=str(cfg.quantizer), norm=str(cfg.norm), bn_stats=str(cfg.bn_stats),
                bn_max_steps=cfg.bn_max_steps, bn_gain=cfg.bn_gain,
                layer_norm_gain=cfg.layer_norm_gain, pn_alpha=cfg.pn_alpha,
                pn_alpha_backward=cfg.pn_alpha_backward, pn_warmup=cfg.pn_warmup,
                latent_clip=cfg.latent_clip)


@dataclass
class NQLSTMLMConfig(NQLSTMConfigMixin):
    embed_dim: int = field(default=512, metadata={"help": "input embedding size"})
    one_hot_input: bool = field(
        default=False, metadata={"help": "feed fixed one-hot vectors instead of a learned "
                                         "embedding (the paper's character models)"})
    share_embeddings: bool = field(
        default=False, metadata={"help": "tie the input embedding and the softmax weights "
                                         "(needs embed_dim == hidden_size)"})
    init_range: float = field(default=0.1, metadata={
        "help": "initialise the input embedding and the softmax weights from U(-r, r) and the "
                "softmax bias with zeros, as the authors' init_weights (0: torch's defaults, "
                "an embedding of std 1)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability"})
    dropout_in: Optional[float] = field(
        default=None, metadata={"help": "dropout on the LSTM input (default: --dropout)"})
    dropout_hidden: Optional[float] = field(
        default=None, metadata={"help": "dropout between LSTM layers (default: --dropout)"})
    dropout_out: Optional[float] = field(
        default=None, metadata={"help": "dropout on the LSTM output (default: --dropout)"})


def _or(value, default):
    return default if value is None else value


class NQLSTMDecoder(FairseqIncrementalDecoder):
    """Embedding or one-hot input -> NQLSTM -> full-precision softmax, with carried state."""

    def __init__(self, cfg: NQLSTMLMConfig, dictionary):
        super().__init__(dictionary)
        vocab = len(dictionary)
        self.one_hot_input = cfg.one_hot_input
        self.dropout_in = _or(cfg.dropout_in, cfg.dropout)
        self.dropout_out = _or(cfg.dropout_out, cfg.dropout)
        if cfg.one_hot_input:
            if cfg.share_embeddings:
                raise ValueError("--share-embeddings needs a learned embedding; it cannot be used "
                                 "with --one-hot-input")
            self.embed_tokens = None
            input_size = vocab
        else:
            self.embed_tokens = nn.Embedding(vocab, cfg.embed_dim, padding_idx=dictionary.pad())
            input_size = cfg.embed_dim
        self.lstm = self.build_lstm(cfg, input_size)
        if cfg.share_embeddings:
            if cfg.embed_dim != cfg.hidden_size:
                raise ValueError(f"--share-embeddings needs --embed-dim == --hidden-size, got "
                                 f"{cfg.embed_dim} and {cfg.hidden_size}")
            self.output_projection = nn.Linear(cfg.hidden_size, vocab)
            self.output_projection.weight = self.embed_tokens.weight
        else:
            self.output_projection = nn.Linear(cfg.hidden_size, vocab)
        self._init_weights(float(cfg.get("init_range", 0.0) or 0.0))
        self._carried: Dict[str, tuple] = {}
        self.log_grad_norms = int(cfg.get("log_grad_norms", 0) or 0)
        self._forwards = 0
        self._grad_norm_path = None
        if self.log_grad_norms > 0:
            self._grad_norm_path = cfg.get("grad_norm_log") or os.path.join(
                cfg.get("grad_norm_save_dir") or ".", "grad_norms.jsonl")

    def _init_weights(self, init_range: float):
        """The reference initialisation of Hou et al.'s code (``init_weights``): embedding and
        softmax weights ~ U(-r, r), softmax bias 0. Without it the embedding has std 1 and the
        input term W_x x_t starts about 17x larger at d=300."""
        if init_range < 0:
            raise ValueError(f"--init-range must be >= 0, got {init_range}")
        if init_range == 0:
            return
        with torch.no_grad():
            if self.embed_tokens is not None:
                self.embed_tokens.weight.uniform_(-init_range, init_range)
            self.output_projection.weight.uniform_(-init_range, init_range)
            self.output_projection.bias.zero_()

    def _recorder(self):
        """A recorder for this forward when --log-grad-norms says so, else None."""
        if not (self.training and self.log_grad_norms > 0):
            return None
        self._forwards += 1
        if (self._forwards - 1) % self.log_grad_norms:
            return None
        forward_index = self._forwards - 1

        def write(layer_index, record):
            record = dict(record, forward=forward_index, layer=layer_index)
            grads = record["grad_h"]
            if layer_index == 0:
                metrics.log_scalar("nq_gradh_first", grads[0], round=4)
                metrics.log_scalar("nq_gradh_last", grads[-1], round=4)
                metrics.log_scalar("nq_lambda1", record["lambda1"], round=3)
                metrics.log_scalar("nq_lambda2", record["lambda2"], round=3)
            os.makedirs(os.path.dirname(os.path.abspath(self._grad_norm_path)), exist_ok=True)
            with open(self._grad_norm_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return write

    def build_lstm(self, cfg, input_size):
        return NQLSTM(input_size, cfg.hidden_size, cfg.num_layers,
                      dropout=_or(cfg.dropout_hidden, cfg.dropout), **lstm_kwargs(cfg))

    # -- carried state (truncated BPTT), saved in the state dict as extra state --------------
    def get_extra_state(self):
        return {"carried": {k: {"h": h, "c": c} for k, (h, c) in self._carried.items()}}

    def set_extra_state(self, state):
        carried = (state or {}).get("carried", {})
        self._carried = {k: (v["h"], v["c"]) for k, v in carried.items()}

    def reset_carried_state(self):
        self._carried = {}

    def _embed(self, tokens):
        if self.one_hot_input:
            x = F.one_hot(tokens, len(self.dictionary)).to(self.output_projection.weight.dtype)
        else:
            x = self.embed_tokens(tokens)
        return F.dropout(x, self.dropout_in, self.training)

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None,
                stream: Optional[str] = None, first_segment: bool = False, **unused):
        x, extra = self.extract_features(prev_output_tokens, incremental_state, stream,
                                         first_segment)
        return self.output_layer(x), extra

    def extract_features(self, prev_output_tokens, incremental_state=None,
                         stream: Optional[str] = None, first_segment: bool = False, **unused):
        tokens = prev_output_tokens
        batch = tokens.shape[0]
        state, t0 = None, 0
        if incremental_state is not None:
            cached = self.get_incremental_state(incremental_state, "lstm_state")
            if cached is not None:
                tokens = tokens[:, -1:]
                state = (cached["h"], cached["c"])
                t0 = int(cached["step"].item())
        elif stream is not None and not first_segment and stream in self._carried:
            h, c = self._carried[stream]
            if h.shape[1] == batch and h.device == tokens.device:
                state = (h, c)
            else:
                logger.warning("carried LSTM state of stream %r has batch %d, this batch has %d:"
                               " starting from zeros", stream, h.shape[1], batch)
        x = self._embed(tokens).transpose(0, 1)  # (T, B, E)
        recorder = self._recorder() if incremental_state is None else None
        if recorder is None:
            out, (h, c) = self.lstm(x, state, t0=t0)
        else:
            out, (h, c) = self.lstm(x, state, t0=t0, recorder=recorder)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "lstm_state", {
                "h": h, "c": c, "step": torch.tensor(t0 + tokens.shape[1])})
        elif stream is not None:
            self._carried[stream] = (h.detach(), c.detach())
        out = F.dropout(out, self.dropout_out, self.training).transpose(0, 1)  # (B, T, H)
        return out, {"attn": None, "inner_states": None}

    def output_layer(self, features, **kwargs):
        return self.output_projection(features)

    def reorder_incremental_state(self, incremental_state, new_order):
        cached = self.get_incremental_state(incremental_state, "lstm_state")
        if cached is None:
            return
        self.set_incremental_state(incremental_state, "lstm_state", {
            "h": cached["h"].index_select(1, new_order),
            "c": cached["c"].index_select(1, new_order), "step": cached["step"]})

    def max_positions(self):
        return int(1e6)


@register_model("nq_lstm_lm", dataclass=NQLSTMLMConfig)
class NQLSTMLanguageModel(CheckedLoading, FairseqLanguageModel):
    """Normalized, quantized LSTM language model (Hou et al., NeurIPS 2019): logits =
    softmax(W_o NQLSTM(E x)) with the LSTM of :class:`nq_plugin.nn.NQLSTM`."""

    @classmethod
    def build_model(cls, cfg: NQLSTMLMConfig, task):
        return cls(NQLSTMDecoder(cfg, task.target_dictionary))

    def forward(self, src_tokens, **kwargs):
        return self.decoder(src_tokens, **kwargs)

    def reset_carried_state(self):
        self.decoder.reset_carried_state()


def _arch(name, **defaults):
    def apply(args):
        for key, value in defaults.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
    register_model_architecture("nq_lstm_lm", name)(apply)


# Settings of the paper (Hou et al., NeurIPS 2019, appendix A); bn_max_steps = BPTT length.
_arch("nq_lstm_lm_ptb_char", hidden_size=512, num_layers=1, one_hot_input=True, embed_dim=512,
      bn_max_steps=100, dropout=0.0)
_arch("nq_lstm_lm_warpeace", hidden_size=512, num_layers=1, one_hot_input=True, embed_dim=512,
      bn_max_steps=100, dropout=0.0)
_arch("nq_lstm_lm_text8", hidden_size=2000, num_layers=1, one_hot_input=True, embed_dim=2000,
      bn_max_steps=180, dropout=0.0)
_arch("nq_lstm_lm_ptb_word", hidden_size=300, num_layers=1, embed_dim=300, one_hot_input=False,
      bn_max_steps=35, dropout=0.5)
_arch("nq_lstm_lm_ptb_word_650", hidden_size=650, num_layers=1, embed_dim=650,
      one_hot_input=False, bn_max_steps=35, dropout=0.5)
_arch("nq_lstm_lm_ptb_word_2x650", hidden_size=650, num_layers=2, embed_dim=650,
      one_hot_input=False, bn_max_steps=35, dropout=0.5)
