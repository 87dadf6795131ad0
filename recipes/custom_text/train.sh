#!/usr/bin/env bash
# A quantized, normalized LSTM language model on your own text (word-level settings of the
# paper: embedding = hidden = 300, dropout 0.5, SGD lr 20 divided by 4 on a plateau, clip 0.25,
# batch 20, 35 steps, latent LSTM weights of BC/TC at lr x 2/a).
#
#   recipes/custom_text/train.sh DATA_DIR SAVE_DIR QUANTIZER NORM [extra fairseq-train args...]
#
#   DATA_DIR  OUT_DIR/bin of prepare.sh; extras e.g. --hidden-size 650 --embed-dim 650,
#             --max-epoch 10; fairseq resumes from SAVE_DIR/checkpoint_last.pt by itself
exec bash "$(dirname "$0")/../common/train_lm.sh" --arch nq_lstm_lm_ptb_word --optimizer nq_sgd --lr 20 --lstm-lr-scale auto \
    --clip-norm 0.25 --lr-scheduler reduce_lr_on_plateau --lr-shrink 0.25 --batch-size 20 \
    --tokens-per-sample 35 --max-epoch 40 -- "$@"
