#!/usr/bin/env bash
# Regenerates every picture of docs/diagnostics.md: five short PTB char runs (fp / BinaryConnect
# and TerConnect without and with weight normalization) with --log-grad-norms, then
# nq-analyze. DATA: the ptb_char directory of recipes/ptb/prepare.sh.
#
#   bash docs/diagnostics/run_ptb_char.sh DATA_BIN/ptb_char RUNS_DIR [UPDATES=150]
set -euo pipefail
DATA="${1:?usage: run_ptb_char.sh DATA_BIN/ptb_char RUNS_DIR [UPDATES]}"
RUNS="${2:?usage: run_ptb_char.sh DATA_BIN/ptb_char RUNS_DIR [UPDATES]}"
UPDATES="${3:-150}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -x "$ROOT/.venv/bin/fairseq-train" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
for run in "fp none" "bc none" "bc weight" "tc none" "tc weight"; do
  set -- $run
  name="$1_$2"
  [ -e "$RUNS/$name" ] && { echo "$RUNS/$name exists; choose another RUNS_DIR" >&2; exit 1; }
  mkdir -p "$RUNS/$name"
  fairseq-train "$DATA" --user-dir "$ROOT/nq_plugin" --task bptt_lm --arch nq_lstm_lm_ptb_char \
      --quantizer "$1" --norm "$2" --optimizer nq_adam --lr 0.002 --clip-norm 5 \
      --batch-size 32 --tokens-per-sample 100 --max-update "$UPDATES" --cpu --seed 1 \
      --log-grad-norms 10 --save-dir "$RUNS/$name" --no-save --disable-validation \
      --log-format simple --log-interval 10 > "$RUNS/$name/train.log" 2>&1 \
    || echo "$name stopped early (see $RUNS/$name/train.log): a quantized LSTM without" \
            "normalization can explode -- fairseq stops on Nan/Inf gradients; records are kept"
done
nq-analyze "$RUNS/fp_none" "$RUNS/bc_none" "$RUNS/bc_weight" "$RUNS/tc_none" "$RUNS/tc_weight" \
    --out "$ROOT/docs/diagnostics"
