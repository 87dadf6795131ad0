"""Diagnostics of exploding gradients in quantized LSTMs (Hou et al., NeurIPS 2019): the record
schema (record.py), the per-step recorder observing an LSTM layer (recorder.py) and where the
records go (log.py: JSON lines, fairseq metrics). ``nq_plugin.nn`` does not import this package;
the models hand the recorder to the LSTM as a step observer."""
