#!/usr/bin/env bash
# text8 (Matt Mahoney's text8.zip: 100,000,000 bytes of a-z and space), for fairseq.
#
#   recipes/text8/prepare.sh OUT_DIR [FILE] [--size N --download-size N --split-sizes A B C]   (overrides: tests only)
#
# FILE: a local text8.zip; without it the zip is downloaded from mattmahoney.net/dc.
# Either way the zip's size (31,344,016 bytes, as TensorFlow's word2vec tutorial pins it), the
# content's size and its alphabet are checked; split 90M/5M/5M in order, streamed from the zip
# (the single 100M-byte line is never held as Python strings). Writes OUT_DIR/raw, OUT_DIR/text8.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
OUT="${1:?usage: prepare.sh OUT_DIR [FILE]}"; shift
SRC=""; if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then SRC="$1"; shift; fi
URL="http://mattmahoney.net/dc/text8.zip"
mkdir -p "$OUT/raw"
if [ -z "$SRC" ]; then
  SRC="$OUT/raw/text8.zip"
  if [ ! -f "$SRC" ]; then
    echo "downloading $URL"
    curl -fsSL --retry 2 -o "$SRC.part" "$URL" || {
      rm -f "$SRC.part"
      echo "prepare.sh: download failed (offline?). Pass a local copy: prepare.sh $OUT FILE" >&2
      exit 1; }
    mv "$SRC.part" "$SRC"
  fi
fi
python3 -m nq_plugin.data.symbol_corpus text8 "$SRC" "$OUT/text8" "$@"
