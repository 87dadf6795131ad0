#!/usr/bin/env bash
# Shared by recipes/warpeace and recipes/text8: fetch (or take) the corpus file, then binarize
# it byte by byte with nq_plugin/data/symbol_corpus.py (checks size / checksum / alphabet).
#
#   prepare_bytes.sh CORPUS URL FILE_NAME OUT_DIR [LOCAL_FILE] [--sha256 HEX ...]
set -euo pipefail
CORPUS="$1"; URL="$2"; NAME="$3"; shift 3
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
OUT="${1:?usage: prepare.sh OUT_DIR [FILE]}"; shift
SRC=""; if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then SRC="$1"; shift; fi
mkdir -p "$OUT/raw"
if [ -z "$SRC" ]; then
  SRC="$OUT/raw/$NAME"
  if [ ! -f "$SRC" ]; then
    echo "downloading $URL"
    curl -fsSL --retry 2 -o "$SRC.part" "$URL" || {
      rm -f "$SRC.part"
      echo "prepare.sh: download failed (offline?). Pass a local copy: prepare.sh $OUT FILE" >&2
      exit 1; }
    mv "$SRC.part" "$SRC"
  fi
fi
python3 -m nq_plugin.data.symbol_corpus "$CORPUS" "$SRC" "$OUT/$CORPUS" "$@"
