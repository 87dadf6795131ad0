#!/usr/bin/env bash
# Penn Treebank, character level, with the paper's hyperparameters (Hou et al., appendix A.1):
# 1x512 LSTM, one-hot input, Adam lr 0.002 decayed by 0.98 per epoch after 10 epochs, gradient
# norm clipped at 5, batch 64, 100 time steps, at most 200 epochs.
#
#   recipes/ptb_char/train.sh DATA_BIN SAVE_DIR QUANTIZER NORM [extra fairseq-train args...]
#
#   DATA_BIN  the ptb_char folder written by recipes/ptb_char/prepare.sh
#   QUANTIZER fp | bc | tc | bwn | twn | lab | lat      NORM none | weight | layer | batch | power
#   extras    e.g. --max-epoch 50 (default 200), --bn-stats separate, --stop-time-hours 2.4,
#             --restore-file SAVE_DIR/checkpoint_last.pt to resume (the default: fairseq resumes
#             from SAVE_DIR/checkpoint_last.pt by itself), DEVICE="" to train on a GPU.
# (--force-anneal 11 --lr-shrink 0.98: lr_e = 0.002 * 0.98^(e-10) after epoch 10)
exec bash "$(dirname "$0")/../common/train_lm.sh" --arch nq_lstm_lm_ptb_char --optimizer nq_adam --lr 0.002 --clip-norm 5 \
    --lr-scheduler fixed --force-anneal 11 --lr-shrink 0.98 --batch-size 64 --tokens-per-sample 100 \
    --max-epoch 200 -- "$@"
