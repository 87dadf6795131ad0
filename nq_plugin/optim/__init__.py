"""fairseq glue: the optimizers. fairseq is imported only by the glue (models/, tasks/, criterions/,
optim/, distributed.py, compat.py) and, lazily where used, by cli/, zoo/ and diagnostics/log.py;
the core (quant/, norm/, nn/, packed/, sizes.py, data/) never imports it."""
