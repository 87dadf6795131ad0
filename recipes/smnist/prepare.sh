#!/usr/bin/env bash
# MNIST for sequential MNIST: the four idx files, verified.
#
#   recipes/smnist/prepare.sh OUT_DIR [MNIST_DIR]
#
# MNIST_DIR: a folder with the idx files (gzipped or not; e.g. ../shared/data/mnist), copied.
# Without it they are downloaded. Either way the SHA-256 of their decompressed content is checked
# (nq_plugin.data.mnist), so a corrupt or different file is refused before training.
set -euo pipefail
OUT="${1:?usage: prepare.sh OUT_DIR [MNIST_DIR]}"
SRC="${2:-}"
MIRROR="${MNIST_MIRROR:-https://ossci-datasets.s3.amazonaws.com/mnist}"
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
PY="python3"; [ -x "$(dirname "$0")/../../.venv/bin/python" ] && PY="$(dirname "$0")/../../.venv/bin/python"
mkdir -p "$OUT"
for f in $FILES; do
  if [ -e "$OUT/$f.gz" ] || [ -e "$OUT/$f" ]; then continue; fi
  if [ -n "$SRC" ]; then
    if [ -f "$SRC/$f.gz" ]; then cp "$SRC/$f.gz" "$OUT/$f.gz.part" && mv "$OUT/$f.gz.part" "$OUT/$f.gz"
    elif [ -f "$SRC/$f" ]; then cp "$SRC/$f" "$OUT/$f.part" && mv "$OUT/$f.part" "$OUT/$f"
    else echo "prepare.sh: $SRC has no $f(.gz)" >&2; exit 1; fi
  else
    echo "downloading $MIRROR/$f.gz"
    curl -fsSL --retry 2 -o "$OUT/$f.gz.part" "$MIRROR/$f.gz" || {
      echo "prepare.sh: download failed (offline?). Pass a local copy: prepare.sh $OUT MNIST_DIR" >&2
      rm -f "$OUT/$f.gz.part"; exit 1; }
    mv "$OUT/$f.gz.part" "$OUT/$f.gz"
  fi
done
"$PY" - "$OUT" <<'PY'
import sys
from nq_plugin.data.mnist import load_mnist
splits = load_mnist(sys.argv[1])  # checks structure and the SHA-256 of the standard files
print("MNIST verified:", ", ".join(f"{k} {len(v[1])}" for k, v in splits.items()))
PY
