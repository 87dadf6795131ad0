"""The normalized, quantized LSTM."""
from .lstm import NQLSTM, NQLSTMLayer

__all__ = ["NQLSTM", "NQLSTMLayer"]
