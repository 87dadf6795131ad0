#!/usr/bin/env bash
# Test-set bits per character of a text8 checkpoint (fairseq-eval-lm, state carried through
# the whole test split as one stream: batch size 1), and its size as the paper counts it.
#
#   recipes/text8/eval.sh DATA_BIN CHECKPOINT [extra fairseq-eval-lm args...]
set -euo pipefail
DATA="${1:?usage: eval.sh DATA_BIN CHECKPOINT [args...]}"
CKPT="${2:?usage: eval.sh DATA_BIN CHECKPOINT [args...]}"
shift 2
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-eval-lm" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
fairseq-eval-lm "$DATA" --user-dir "$ROOT/nq_plugin" --task bptt_lm --path "$CKPT" \
    --gen-subset test --tokens-per-sample 180 --cpu "$@"
nq-summary "$CKPT"
