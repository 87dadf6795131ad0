#!/usr/bin/env bash
# The zoo runs made on a lent GPU machine (one H100, Python 3.12, torch 2.11+cu130, no network):
# several recipe runs in parallel on the one GPU, each stopped by fairseq's --stop-time-hours,
# then each run's best checkpoint is stripped of its optimizer state and packed for transfer.
#
#   bash recipes/zoo/gpu_batch.sh OUT_DIR HOURS
#
# Expects data-bin/ptb_char, data-bin/ptb_word and data/mnist (recipes' prepare.sh outputs) and
# fairseq importable (wheels installed into PYTHONPATH beforehand).
set -uo pipefail
OUT="${1:?usage: gpu_batch.sh OUT_DIR HOURS}"
HOURS="${2:?usage: gpu_batch.sh OUT_DIR HOURS}"
mkdir -p "$OUT" runs
export DEVICE="" OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
C=recipes/ptb_char/train.sh W=recipes/ptb_word/train.sh
STOP="--stop-time-hours $HOURS --seed 1 ${RESUME:-}"   # RESUME=--reset-optimizer continues a round
bash $C data-bin/ptb_char runs/ptb_char_fp_none fp none $STOP > /dev/null 2>&1 &
bash $C data-bin/ptb_char runs/ptb_char_bc_weight bc weight $STOP > /dev/null 2>&1 &
bash $C data-bin/ptb_char runs/ptb_char_tc_weight tc weight $STOP > /dev/null 2>&1 &
[ -z "${RESUME:-}" ] && bash $C data-bin/ptb_char runs/ptb_char_bc_none bc none $STOP --log-grad-norms 1 > /dev/null 2>&1 &
bash $C data-bin/ptb_char runs/ptb_char_bc_layer_gpu bc layer $STOP > /dev/null 2>&1 &
bash $W data-bin/ptb_word runs/ptb_word_tc_weight tc weight $STOP > /dev/null 2>&1 &
bash $W data-bin/ptb_word runs/ptb_word_bc_weight bc weight $STOP > /dev/null 2>&1 &
mkdir -p runs/smnist_bc_batch
bash recipes/smnist/train.sh data/mnist runs/smnist_bc_batch 20 --norm batch --bn-stats separate \
    --init-state-noise 0.1 $STOP > runs/smnist_bc_batch/train.log 2>&1 &
# a watchdog: whatever the runs saved by then is packed
(sleep $(python3 -c "print(int($HOURS*3600)+90)"); pkill -f fairseq-train) &
WATCH=$!
wait $(jobs -p | grep -v "^$WATCH$")
kill $WATCH 2>/dev/null
for d in runs/*/; do
  name=$(basename "$d")
  python3 - "$d" <<'PY'
import sys, os, torch
d = sys.argv[1]
for f in ("checkpoint_best.pt", "checkpoint_last.pt"):
    p = os.path.join(d, f)
    if os.path.exists(p):
        s = torch.load(p, map_location="cpu", weights_only=False)
        s["last_optimizer_state"] = None
        torch.save(s, p + ".stripped")
        os.replace(p + ".stripped", p)
PY
done
# the transfer is limited to 64 MB: the second word model goes back without its checkpoints
tar -cf "$OUT/runs.tar" --exclude="ptb_word_bc_weight/*.pt" --exclude="*/checkpoint_last.pt" runs
split -b 15M "$OUT/runs.tar" "$OUT/runs.tar.part-" && rm "$OUT/runs.tar"
for f in runs/*/train.log; do echo "== $f"; grep -E "valid on 'valid'" "$f" | tail -2; grep -E "Error|error" "$f" | tail -3; done
ls -la "$OUT"
