#!/usr/bin/env bash
# Penn Treebank, character and word level (both are prepared together by recipes/ptb/prepare.sh):
#
#   recipes/ptb_word/prepare.sh OUT_DIR [PTB_DIR]
#
# PTB_DIR: a local copy (e.g. ../shared/data/ptb); without it Mikolov's simple-examples.tgz is
# downloaded. Either way the six files are checked against recipes/ptb/SHA256SUMS.
# Writes OUT_DIR/ptb_char and OUT_DIR/ptb_word.
exec bash "$(cd "$(dirname "$0")/.." && pwd)/ptb/prepare.sh" "$@"
