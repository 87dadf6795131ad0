"""fairseq language model ``nq_lstm_lm``: embedding (or fixed one-hot input), NQLSTM, dropout,
full-precision softmax (optionally tied to the input embedding).

Hidden state: with the ``bptt_lm`` task each batch is the next segment of B contiguous streams,
and (h, c) is carried from one segment to the next (truncated BPTT, as Hou et al. and Cooijmans
et al.); the carried states (one per data split) are part of the model's state dict, so a resumed
run continues exactly. With fairseq's ``language_modeling`` task every block starts from zeros.
Incremental decoding keeps (h, c) and the step index (for per-step batch-norm statistics).
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fairseq.models import (FairseqIncrementalDecoder, FairseqLanguageModel, register_model,
                            register_model_architecture)
from torch import nn

from ..diagnostics.log import GradNormLogger
from ..nn import NQLSTM
from .checked_loading import CheckedLoading
from .options import NQLSTMConfigMixin, lstm_kwargs

logger = logging.getLogger(__name__)

__all__ = ["NQLSTMConfigMixin", "lstm_kwargs", "NQLSTMLMConfig", "NQLSTMDecoder",
           "NQLSTMLanguageModel"]


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
        # The LSTM is initialised from its own generator, seeded by one draw from the global
        # one: building it takes the same from the global random stream whatever the LSTM (the
        # packed one draws nothing else), so fairseq-generate --seed, which seeds before the
        # model is built, samples the same tokens from a model and its nq-pack copy.
        seed = int(torch.randint(0, 2 ** 62, ()).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
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
        self.grad_norm_logger = GradNormLogger.from_config(cfg)

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
        observer = (self.grad_norm_logger.observer(self.training)
                    if incremental_state is None else None)
        if observer is None:
            out, (h, c) = self.run_lstm(x, state, t0, incremental_state is not None)
        else:
            out, (h, c) = self.lstm(x, state, t0=t0, observer=observer)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "lstm_state", {
                "h": h, "c": c, "step": torch.tensor(t0 + tokens.shape[1])})
        elif stream is not None:
            self._carried[stream] = (h.detach(), c.detach())
        out = F.dropout(out, self.dropout_out, self.training).transpose(0, 1)  # (B, T, H)
        return out, {"attn": None, "inner_states": None}

    def generation_step(self, tokens: torch.Tensor, state=None, t0: int = 0):
        """Logits (B, T, V) of ``tokens`` (B, T) continuing ``state`` ((h, c), None at the start)
        from step ``t0``, and the new state: what an incremental ``forward`` computes, without
        fairseq's incremental-state dict (a sampling loop's step; eval mode)."""
        x = self._embed(tokens).transpose(0, 1)  # (T, B, E)
        out, new_state = self.run_lstm(x, state, t0, True)
        return self.output_layer(out.transpose(0, 1)), new_state

    def run_lstm(self, x, state, t0: int, incremental: bool):
        """The LSTM's forward (the packed decoder replays CUDA graphs for generation steps)."""
        return self.lstm(x, state, t0=t0)

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
    dictionary_tensor = "decoder.output_projection.weight"
    packed_model = "nq_lstm_lm_packed"  # the registered model nq-pack exports it to

    @classmethod
    def build_model(cls, cfg: NQLSTMLMConfig, task):
        return cls.remember_dictionary(cls(NQLSTMDecoder(cfg, task.target_dictionary)), task)

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
