"""Bit-packed inference: the packed format, packed LSTM modules, kernels (Triton / PyTorch)."""
from .format import FORMAT_VERSION, PackedFormatError, pack_bits, unpack_bits
from .lstm import PackedNQLSTM, PackedNQLSTMLayer, pack_layer

__all__ = ["FORMAT_VERSION", "PackedFormatError", "pack_bits", "unpack_bits", "PackedNQLSTM",
           "PackedNQLSTMLayer", "pack_layer"]
