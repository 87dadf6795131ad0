"""nq_plugin: normalized, quantized LSTMs for fairseq."""
