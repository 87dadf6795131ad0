#!/usr/bin/env bash
# Test-split perplexity per sentencepiece piece (fairseq-eval-lm), and the model's size.
#
#   recipes/custom_text/eval.sh DATA_DIR CHECKPOINT [extra fairseq-eval-lm args...]
set -euo pipefail
DATA="${1:?usage: eval.sh DATA_DIR CHECKPOINT [args...]}"
CKPT="${2:?usage: eval.sh DATA_DIR CHECKPOINT [args...]}"
shift 2
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-eval-lm" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
fairseq-eval-lm "$DATA" --user-dir "$ROOT/nq_plugin" --task bptt_lm --path "$CKPT" \
    --gen-subset test --tokens-per-sample 35 --cpu "$@"
nq-summary "$CKPT"
