"""fairseq model ``nq_lstm_classifier``: a normalized, quantized LSTM reads a sequence and its
final hidden state goes through a full-precision linear layer to class logits (sequential MNIST,
Hou et al., NeurIPS 2019, appendix A.3; Cooijmans et al., ICLR 2017).

Reference initialisation (``--init reference``, the default; Cooijmans et al.): orthogonal W_x,
each gate block of W_h the identity (with U(-1e-3, 1e-3) off the diagonal, so that binary
quantizers see random signs rather than ties), forget-gate bias 1, learnable initial state (h0, c0), and
optionally N(0, sigma) noise on the initial state during training (``--init-state-noise 0.1``
for layer/batch norm: the first pixels are all zero and have zero variance otherwise).

Chrono initialisation (``--init chrono``; Tallec & Ollivier, *Can recurrent neural networks warp
time?*, ICLR 2018): the reference weights, but forget-gate biases b_f = log u with
u ~ U(1, T_max - 1) and input-gate biases b_i = -b_f (``--chrono-steps`` T_max, 784 for one
pixel a step), so that units keep their cell state over up to T_max steps at the start. With
weight or layer norm a binary LSTM's cell state otherwise forgets the digit over the ~100 blank
pixels that end it (forget gate sigma(1) = 0.73 a step): on 100 training images the reference
initialisation stayed at the labels' entropy for 60 Adam steps where chrono's loss fell
(BinaryConnect + layer norm 2.26 -> 1.48 in 120; recipes/smnist/probe_init.py). Batch norm re-standardizes the differences
between the images at every step and learns with either.
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from torch import nn

from ..diagnostics.log import GradNormLogger
from ..nn import NQLSTM
from .checked_loading import CheckedLoading
from .options import NQLSTMConfigMixin, lstm_kwargs


@dataclass
class NQLSTMClassifierConfig(NQLSTMConfigMixin):
    num_classes: int = field(default=10, metadata={"help": "number of classes"})
    quantize_input: bool = field(default=False, metadata={
        "help": "quantize W_x too (off: scalar pixel inputs keep W_x full precision, as the paper)"})
    init: ChoiceEnum(["reference", "chrono", "uniform"]) = field(default="reference", metadata={
        "help": "reference: orthogonal W_x, identity W_h blocks, forget bias 1; chrono: the "
                "same weights, forget biases log U(1, chrono_steps - 1) and input biases their "
                "negatives (Tallec & Ollivier 2018); uniform: torch's U(-1/sqrt(H), 1/sqrt(H))"})
    chrono_steps: int = field(default=784, metadata={
        "help": "T_max of --init chrono: the longest span the initial forget gates keep"})
    learn_initial_state: bool = field(default=True, metadata={
        "help": "learn h0 and c0 (else zeros)"})
    init_state_noise: float = field(default=0.0, metadata={
        "help": "std of N(0, std) noise added to the initial state in training"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier"})


@register_model("nq_lstm_classifier", dataclass=NQLSTMClassifierConfig)
class NQLSTMClassifier(CheckedLoading, BaseFairseqModel):
    """logits = W_c h_T + b_c with h_T the last hidden state of :class:`NQLSTM`."""
    evaluation_tool = "fairseq-validate"
    packed_model = "nq_lstm_classifier_packed"  # the registered model nq-pack exports it to

    def __init__(self, cfg, input_size: int):
        super().__init__()
        self.lstm = self.build_lstm(cfg, input_size)
        shape = (cfg.num_layers, 1, cfg.hidden_size)
        if cfg.learn_initial_state:
            self.h0 = nn.Parameter(torch.zeros(shape))
            self.c0 = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("h0", torch.zeros(shape), persistent=False)
            self.register_buffer("c0", torch.zeros(shape), persistent=False)
        self.init_state_noise = cfg.init_state_noise
        self.dropout = cfg.dropout
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_classes)
        self.grad_norm_logger = GradNormLogger.from_config(cfg)
        if str(cfg.init) in ("reference", "chrono"):
            self.reference_init()
        if str(cfg.init) == "chrono":
            self.chrono_init(cfg.chrono_steps)

    def build_lstm(self, cfg, input_size: int):
        return NQLSTM(input_size, cfg.hidden_size, cfg.num_layers,
                      quantize_input=cfg.quantize_input, **lstm_kwargs(cfg))

    def run_lstm(self, x, state):
        """The LSTM over the whole sequence, observed by the gradient-norm logger."""
        return self.lstm(x, state, observer=self.grad_norm_logger.observer(self.training))

    @torch.no_grad()
    def reference_init(self):
        for layer in self.lstm.layers:
            hidden = layer.hidden_size
            nn.init.orthogonal_(layer.weight_ih)
            # identity blocks, plus U(-1e-3, 1e-3) off the diagonal: exact zeros would make a
            # binary quantizer (sign(0) = +1) turn W_h into an all-ones matrix whose gradient
            # explodes over 784 steps; the tiny noise gives random signs instead
            noise = torch.empty(hidden, hidden).uniform_(-1e-3, 1e-3).fill_diagonal_(0)
            layer.weight_hh.copy_((torch.eye(hidden) + noise).repeat(4, 1))
            layer.bias.zero_()
            layer.bias[hidden:2 * hidden] = 1.0  # forget gate
            layer.init_norms_from_weights()

    @torch.no_grad()
    def chrono_init(self, steps: int):
        """Forget-gate biases log U(1, steps - 1), input-gate biases their negatives (Tallec &
        Ollivier, ICLR 2018, section 4)."""
        if steps < 3:
            raise ValueError(f"--chrono-steps must be at least 3 (got {steps}): the forget "
                             "biases are log U(1, chrono_steps - 1)")
        for layer in self.lstm.layers:
            hidden = layer.hidden_size
            forget = torch.empty(hidden).uniform_(1, steps - 1).log_()
            layer.bias[hidden:2 * hidden] = forget
            layer.bias[:hidden] = -forget

    @classmethod
    def build_model(cls, cfg, task):
        return cls(cfg, input_size=getattr(task.cfg, "pixels_per_step", 1))

    def forward(self, pixels, **unused):
        """pixels: (B, T, F) -> logits (B, num_classes)."""
        batch = pixels.shape[0]
        h0 = self.h0.expand(-1, batch, -1)
        c0 = self.c0.expand(-1, batch, -1)
        if self.training and self.init_state_noise > 0:
            h0 = h0 + self.init_state_noise * torch.randn_like(h0)
            c0 = c0 + self.init_state_noise * torch.randn_like(c0)
        _, (h, _) = self.run_lstm(pixels.transpose(0, 1), (h0.contiguous(), c0.contiguous()))
        return self.classifier(F.dropout(h[-1], self.dropout, self.training))

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output.float()
        return F.log_softmax(logits, -1) if log_probs else F.softmax(logits, -1)

    def max_positions(self):
        return None


@register_model_architecture("nq_lstm_classifier", "nq_lstm_classifier_smnist")
def smnist(args):
    """1 x 100 LSTM, scalar pixel input (W_x full precision), per-step statistics over 784 steps,
    layer-norm gain 0.1 (the reference code)."""
    defaults = dict(hidden_size=100, num_layers=1, bn_max_steps=784, layer_norm_gain=0.1,
                    quantize_input=False)
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
