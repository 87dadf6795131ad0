#!/usr/bin/env bash
# Test-set bits per character of a text8 checkpoint (fairseq-eval-lm, state carried through
# the whole test split as one stream: batch size 1), and its size as the paper counts it.
#
#   recipes/text8/eval.sh DATA_BIN CHECKPOINT [extra fairseq-eval-lm args...]
exec bash "$(dirname "$0")/../common/eval_lm.sh" 180 "$@"
