"""Diagnostics of exploding gradients in quantized LSTMs (Hou et al., NeurIPS 2019)."""
