#!/usr/bin/env bash
# War and Peace (char-rnn's warpeace_input.txt, 3,258,246 bytes), byte by byte, for fairseq.
#
#   recipes/warpeace/prepare.sh OUT_DIR [FILE] [--sha256 HEX --size N]   (overrides: tests only)
#
# FILE: a local copy; without it the file is downloaded from char-rnn's canonical address.
# Either way its sha256 is checked. Every byte is one symbol (87 symbols: CR, LF and the
# byte-order mark's bytes included), split 80/10/10 by bytes in file order; nothing is added
# or lost (nq_plugin/data/symbol_corpus.py). Writes OUT_DIR/raw and OUT_DIR/warpeace.
exec bash "$(dirname "$0")/../common/prepare_bytes.sh" warpeace \
    "https://cs.stanford.edu/people/karpathy/char-rnn/warpeace_input.txt" warpeace_input.txt "$@"
