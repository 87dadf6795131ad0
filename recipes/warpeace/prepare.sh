#!/usr/bin/env bash
# War and Peace (char-rnn's warpeace_input.txt, 3,258,246 bytes), byte by byte, for fairseq.
#
#   recipes/warpeace/prepare.sh OUT_DIR [FILE] [--sha256 HEX --size N]   (overrides: tests only)
#
# FILE: a local copy; without it the file is downloaded from char-rnn's canonical address.
# Either way its sha256 is checked. Every byte is one symbol (87 symbols: CR, LF and the
# byte-order mark's bytes included), split 80/10/10 by bytes in file order; nothing is added
# or lost (nq_plugin/data/symbol_corpus.py). Writes OUT_DIR/raw and OUT_DIR/warpeace.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
OUT="${1:?usage: prepare.sh OUT_DIR [FILE]}"; shift
SRC=""; if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then SRC="$1"; shift; fi
URL="https://cs.stanford.edu/people/karpathy/char-rnn/warpeace_input.txt"
mkdir -p "$OUT/raw"
if [ -z "$SRC" ]; then
  SRC="$OUT/raw/warpeace_input.txt"
  if [ ! -f "$SRC" ]; then
    echo "downloading $URL"
    curl -fsSL --retry 2 -o "$SRC.part" "$URL" || {
      rm -f "$SRC.part"
      echo "prepare.sh: download failed (offline?). Pass a local copy: prepare.sh $OUT FILE" >&2
      exit 1; }
    mv "$SRC.part" "$SRC"
  fi
fi
python3 -m nq_plugin.data.symbol_corpus warpeace "$SRC" "$OUT/warpeace" "$@"
