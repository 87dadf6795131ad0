#!/usr/bin/env bash
# Offline demo of the whole pipeline on the shipped demo text (character level, PTB-char
# format): fairseq-preprocess -> fairseq-train (binarized, weight-normalized LSTM LM) ->
# fairseq-eval-lm (bits per character) -> nq-summary (size as the paper counts it).
# Everything goes to a new temporary directory (printed), nothing existing is touched.
# Run it from the repository root with the project's venv: .venv/bin/bash is not needed,
# the commands are taken from the venv this script finds first on PATH or in .venv/bin.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-train" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
OUT="$(mktemp -d -t nq-demo-XXXXXX)"
UPDATES="${UPDATES:-300}"
echo "== nq_plugin demo: working in $OUT"

fairseq-preprocess --only-source --trainpref "$HERE/text/train.txt" \
    --validpref "$HERE/text/valid.txt" --testpref "$HERE/text/valid.txt" \
    --destdir "$OUT/data-bin" --workers 1 > "$OUT/preprocess.log" 2>&1

fairseq-train "$OUT/data-bin" --user-dir "$ROOT/nq_plugin" --task bptt_lm \
    --arch nq_lstm_lm_ptb_char --hidden-size 128 --quantizer bc --norm weight \
    --optimizer nq_adam --lr 0.01 --clip-norm 5 --batch-size 8 --tokens-per-sample 50 \
    --max-update "$UPDATES" --cpu --save-dir "$OUT/checkpoints" --no-epoch-checkpoints \
    --num-workers 0 --log-format simple --log-interval 100 > "$OUT/train.log" 2>&1
grep -E "\| (train|valid) \|" "$OUT/train.log" | tail -2

fairseq-eval-lm "$OUT/data-bin" --user-dir "$ROOT/nq_plugin" --task bptt_lm \
    --path "$OUT/checkpoints/checkpoint_best.pt" --gen-subset valid --cpu --num-workers 0 \
    > "$OUT/eval.log" 2>&1
grep "Loss (base 2)" "$OUT/eval.log" | sed 's/.*eval_lm | /fairseq-eval-lm: /; s/^INFO:fairseq_cli.eval_lm:/fairseq-eval-lm: /'
python3 - "$HERE/text" <<'PY'
import math, sys, collections
read = lambda s: [t for l in open(f"{sys.argv[1]}/{s}.txt") for t in l.split() + ["</s>"]]
train, valid = read("train"), read("valid")
counts = collections.Counter(train)
vocab = set(train) | set(valid)
p = lambda t: (counts[t] + 1) / (len(train) + len(vocab))  # add-one smoothed unigram
bits = -sum(math.log2(p(t)) for t in valid) / len(valid)
print(f"(Loss (base 2) is bits per character; a unigram model of the training text: {bits:.2f})")
PY

nq-summary "$OUT/checkpoints/checkpoint_best.pt"
echo "== logs and checkpoints: $OUT"
