"""fairseq glue: criterions."""
