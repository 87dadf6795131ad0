#!/usr/bin/env bash
# Test accuracy of a sequential-MNIST checkpoint (the 10,000 test images), and its size.
#
#   recipes/smnist/evaluate.sh DATA_DIR CHECKPOINT [extra fairseq-validate args, e.g. --permute]
set -euo pipefail
DATA="${1:?usage: evaluate.sh DATA_DIR CHECKPOINT [args...]}"
CKPT="${2:?usage: evaluate.sh DATA_DIR CHECKPOINT [args...]}"
shift 2
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-validate" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
fairseq-validate "$DATA" --user-dir "$ROOT/nq_plugin" --task sequential_mnist \
    --criterion sequence_classification --path "$CKPT" --valid-subset test --batch-size 500 \
    --cpu "$@" 2>&1 | grep -E "valid on 'test'"
nq-summary "$CKPT"
