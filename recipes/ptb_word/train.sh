#!/usr/bin/env bash
# Penn Treebank, word level, with the paper's hyperparameters (Hou et al., appendix A.2):
# embedding 300 + 1x300 LSTM (or --arch nq_lstm_lm_ptb_word_650 / _2x650), dropout 0.5, SGD with
# lr 20 divided by 4 whenever the validation loss does not improve, gradient norm clipped at 0.25,
# batch 20, 35 time steps, the latent LSTM weights of BC/TC at lr x 2/a (--lstm-lr-scale auto),
# embedding and softmax initialised from U(-0.1, 0.1) (the authors' init_weights).
#
#   recipes/ptb_word/train.sh DATA_BIN SAVE_DIR QUANTIZER NORM [extra fairseq-train args...]
#
#   DATA_BIN  the ptb_word folder written by recipes/ptb_word/prepare.sh
#   extras    e.g. --max-epoch 40 (default), --arch nq_lstm_lm_ptb_word_650, --bn-stats separate,
#             --restore-file to resume (fairseq resumes from SAVE_DIR/checkpoint_last.pt by
#             itself), DEVICE="" to train on a GPU.
exec bash "$(dirname "$0")/../common/train_lm.sh" --arch nq_lstm_lm_ptb_word --optimizer nq_sgd --lr 20 --lstm-lr-scale auto \
    --clip-norm 0.25 --lr-scheduler reduce_lr_on_plateau --lr-shrink 0.25 --batch-size 20 \
    --tokens-per-sample 35 --max-epoch 40 -- "$@"
