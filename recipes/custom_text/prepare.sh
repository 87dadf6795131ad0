#!/usr/bin/env bash
# Your own text -> sentencepiece subwords -> fairseq data (nq_plugin/data/custom_text.py).
#
#   recipes/custom_text/prepare.sh TEXT_FILE OUT_DIR [VOCAB_SIZE=8000]
#
# TEXT_FILE: UTF-8, one sentence or paragraph per line; the last 5 % + 5 % of the lines become
# the validation and test splits. Writes OUT_DIR/raw (splits, pieces), OUT_DIR/spm.model and
# OUT_DIR/bin (binarized; dict.txt and spm.model for generation).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
TEXT="${1:?usage: prepare.sh TEXT_FILE OUT_DIR [VOCAB_SIZE]}"
OUT="${2:?usage: prepare.sh TEXT_FILE OUT_DIR [VOCAB_SIZE]}"
python3 -m nq_plugin.data.custom_text "$TEXT" "$OUT" --vocab-size "${3:-8000}"
