"""Data readers of the core (plain PyTorch / numpy, no fairseq)."""
