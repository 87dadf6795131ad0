#!/usr/bin/env bash
# Sequential MNIST (784 pixels, one per step) with the paper's hyperparameters (Hou et al.,
# appendix A.3): 1x100 LSTM, Adam, lr decaying exponentially from 0.002 to 0.001 over the
# epochs, batch 100, gradient norm clipped at 1.
#
#   recipes/smnist/train.sh DATA_DIR SAVE_DIR [EPOCHS=200] [extra fairseq-train args...]
#
# Default model: BinaryConnect + weight normalization. Override with extra args, e.g.
#   --quantizer tc --norm batch --bn-stats separate --init-state-noise 0.1    (per-step BN)
#   --norm layer --init chrono --init-state-noise 0.1                  (layer norm: without the
#        noise W_h h0 has no variance over the blank first pixels and the gradient overflows)
#   --permute                                                                   (pMNIST)
# DEVICE="" trains on a GPU (default: --cpu). EPOCH_CHECKPOINTS=K keeps the last K epochs'
# checkpoints (checkpointN.pt; default: none), e.g. to average them. The log is appended to
# SAVE_DIR/train.log.
set -euo pipefail
DATA="${1:?usage: train.sh DATA_DIR SAVE_DIR [EPOCHS] [args...]}"
SAVE="${2:?usage: train.sh DATA_DIR SAVE_DIR [EPOCHS] [args...]}"
EPOCHS="${3:-200}"
shift $(( $# < 3 ? $# : 3 ))
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-train" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
# lr_E = 0.002 * shrink^E with shrink = 0.5^(1/EPOCHS): 0.001 in the last epoch
SHRINK=$(python3 -c "print(0.5 ** (1 / $EPOCHS))")
mkdir -p "$SAVE"
EPOCHS_KEPT="--no-epoch-checkpoints"
if [ -n "${EPOCH_CHECKPOINTS:-}" ]; then EPOCHS_KEPT="--keep-last-epochs $EPOCH_CHECKPOINTS"; fi
source "$ROOT/recipes/common/allocator.sh"
fairseq-train "$DATA" --user-dir "$ROOT/nq_plugin" --task sequential_mnist \
    --arch nq_lstm_classifier_smnist --criterion sequence_classification \
    --quantizer bc --norm weight \
    --optimizer nq_adam --lr 0.002 --lr-scheduler fixed --force-anneal 1 --lr-shrink "$SHRINK" \
    --clip-norm 1 --batch-size 100 --required-batch-size-multiple 1 --max-epoch "$EPOCHS" \
    --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
    --save-dir "$SAVE" $EPOCHS_KEPT ${DEVICE---cpu} --log-format simple --log-interval 100 "$@" \
    2>&1 | tee -a "$SAVE/train.log"
