#!/usr/bin/env bash
# Shared by the recipes' train.sh: fairseq-train of nq_lstm_lm on the bptt_lm task.
#
#   train_lm.sh HYPERPARAMETERS... -- DATA_BIN SAVE_DIR QUANTIZER NORM [extra fairseq-train args]
#
# HYPERPARAMETERS are the recipe's fairseq options (architecture, optimizer, schedule, batch,
# window); the extras come last and override them. DEVICE="" trains on a GPU (default --cpu).
# EPOCH_CHECKPOINTS=K keeps the last K epochs' checkpoints (checkpointN.pt; default: none).
# The log is appended to SAVE_DIR/train.log.
set -euo pipefail
HYPER=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do HYPER+=("$1"); shift; done
[ $# -gt 0 ] && shift
USAGE="usage: train.sh DATA_BIN SAVE_DIR QUANTIZER NORM [fairseq-train args...]"
DATA="${1:?$USAGE}"; SAVE="${2:?$USAGE}"; QUANT="${3:?$USAGE}"; NORM="${4:?$USAGE}"
shift 4
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-train" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
DEVICE="${DEVICE---cpu}"
EPOCHS_KEPT="--no-epoch-checkpoints"
if [ -n "${EPOCH_CHECKPOINTS:-}" ]; then EPOCHS_KEPT="--keep-last-epochs $EPOCH_CHECKPOINTS"; fi
source "$ROOT/recipes/common/allocator.sh"
mkdir -p "$SAVE"
fairseq-train "$DATA" --user-dir "$ROOT/nq_plugin" --task bptt_lm "${HYPER[@]}" \
    --quantizer "$QUANT" --norm "$NORM" $DEVICE \
    --save-dir "$SAVE" $EPOCHS_KEPT --log-format simple --log-interval 200 \
    "$@" 2>&1 | tee -a "$SAVE/train.log"
