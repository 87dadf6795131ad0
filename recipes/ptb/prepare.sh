#!/usr/bin/env bash
# Penn Treebank (Mikolov's split), word and character level, binarized for fairseq.
#
#   recipes/ptb/prepare.sh OUT_DIR [PTB_DIR]
#
# PTB_DIR: a folder with ptb.{train,valid,test}.txt and ptb.char.{train,valid,test}.txt (for
# example ../shared/data/ptb). Without it, Mikolov's simple-examples.tgz is downloaded.
# Either way the six files are checked against recipes/ptb/SHA256SUMS before use.
# Writes OUT_DIR/raw (the verified text), OUT_DIR/ptb_char and OUT_DIR/ptb_word (fairseq-bin).
# The char dictionary is not padded (--padding-factor 1): with one-hot input its size is W_x's
# width, 49 symbols + fairseq's 4 specials = 53 (the paper's 50 counts the 49 + end of line).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:?usage: prepare.sh OUT_DIR [PTB_DIR]}"
SRC="${2:-}"
URL="http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
FILES="ptb.train.txt ptb.valid.txt ptb.test.txt ptb.char.train.txt ptb.char.valid.txt ptb.char.test.txt"

for d in "$OUT/ptb_char" "$OUT/ptb_word"; do
  if [ -e "$d" ]; then echo "prepare.sh: $d exists; remove it or choose another OUT_DIR" >&2; exit 1; fi
done
mkdir -p "$OUT/raw"
if [ -n "$SRC" ]; then
  [ -d "$SRC" ] || { echo "prepare.sh: data directory $SRC not found" >&2; exit 1; }
  for f in $FILES; do
    [ -f "$SRC/$f" ] || { echo "prepare.sh: $SRC/$f missing (need: $FILES)" >&2; exit 1; }
    cp "$SRC/$f" "$OUT/raw/$f"
  done
else
  echo "downloading $URL"
  if ! curl -fsSL --retry 2 -o "$OUT/raw/simple-examples.tgz" "$URL"; then
    echo "prepare.sh: download failed (offline?). Pass a local copy: prepare.sh $OUT PTB_DIR" >&2
    exit 1
  fi
  tar -xzf "$OUT/raw/simple-examples.tgz" -C "$OUT/raw" --strip-components=2 \
      $(for f in $FILES; do echo "./simple-examples/data/$f"; done)
fi
if ! (cd "$OUT/raw" && sha256sum --quiet -c "$HERE/SHA256SUMS"); then
  echo "prepare.sh: checksum mismatch: these are not the standard PTB files" >&2; exit 1
fi

# binarized into temporary folders, renamed into place when complete
rm -rf "$OUT/.ptb_char.part" "$OUT/.ptb_word.part"
fairseq-preprocess --only-source --trainpref "$OUT/raw/ptb.char.train.txt" \
  --validpref "$OUT/raw/ptb.char.valid.txt" --testpref "$OUT/raw/ptb.char.test.txt" \
  --destdir "$OUT/.ptb_char.part" --workers 2 --padding-factor 1
fairseq-preprocess --only-source --trainpref "$OUT/raw/ptb.train.txt" \
  --validpref "$OUT/raw/ptb.valid.txt" --testpref "$OUT/raw/ptb.test.txt" \
  --destdir "$OUT/.ptb_word.part" --workers 2
mv "$OUT/.ptb_char.part" "$OUT/ptb_char"
mv "$OUT/.ptb_word.part" "$OUT/ptb_word"
echo "PTB ready: $OUT/ptb_char ($(wc -l < "$OUT/ptb_char/dict.txt") symbols), $OUT/ptb_word ($(wc -l < "$OUT/ptb_word/dict.txt") words)"
