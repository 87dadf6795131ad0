"""Console commands (nq-summary, ...)."""
