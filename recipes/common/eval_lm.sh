#!/usr/bin/env bash
# Shared by the recipes' eval.sh: fairseq-eval-lm on the test split (the state carried through
# the whole split as one stream at the default batch size 1), then nq-summary.
#
#   eval_lm.sh TOKENS_PER_SAMPLE DATA_BIN CHECKPOINT [extra fairseq-eval-lm args...]
set -euo pipefail
TOKENS="${1:?usage: eval_lm.sh TOKENS_PER_SAMPLE DATA_BIN CHECKPOINT [args...]}"
DATA="${2:?usage: eval.sh DATA_BIN CHECKPOINT [args...]}"
CKPT="${3:?usage: eval.sh DATA_BIN CHECKPOINT [args...]}"
shift 3
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-eval-lm" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
fairseq-eval-lm "$DATA" --user-dir "$ROOT/nq_plugin" --task bptt_lm --path "$CKPT" \
    --gen-subset test --tokens-per-sample "$TOKENS" --cpu "$@"
nq-summary "$CKPT"
