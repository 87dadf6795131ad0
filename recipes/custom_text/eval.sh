#!/usr/bin/env bash
# Test-split perplexity per sentencepiece piece (fairseq-eval-lm), and the model's size.
#
#   recipes/custom_text/eval.sh DATA_DIR CHECKPOINT [extra fairseq-eval-lm args...]
exec bash "$(dirname "$0")/../common/eval_lm.sh" 35 "$@"
