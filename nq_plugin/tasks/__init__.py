"""fairseq glue: the only code that imports fairseq (besides checkpoint.py and cli/)."""
