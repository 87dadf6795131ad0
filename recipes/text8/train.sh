#!/usr/bin/env bash
# text8 with the paper's hyperparameters (Hou et al., appendix A.1): 1x2000 LSTM, one-hot input,
# Adam with the constant learning rate 0.001, batch 128, 180 time steps, at most 100 epochs.
#
#   recipes/text8/train.sh DATA_BIN SAVE_DIR QUANTIZER NORM [extra fairseq-train args...]
#
#   DATA_BIN  the text8 folder written by recipes/text8/prepare.sh
#   extras    e.g. --max-epoch 5, --bn-stats separate, --stop-time-hours 2.4; fairseq resumes from
#             SAVE_DIR/checkpoint_last.pt by itself (--restore-file FILE for another), DEVICE=""
#             to train on a GPU (90M characters: an epoch is about 3,900 updates).
exec bash "$(dirname "$0")/../common/train_lm.sh" --arch nq_lstm_lm_text8 --optimizer nq_adam --lr 0.001 --lr-scheduler fixed \
    --batch-size 128 --tokens-per-sample 180 --max-epoch 100 -- "$@"
