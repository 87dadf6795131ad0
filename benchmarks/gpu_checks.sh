#!/usr/bin/env bash
# Issue #24's GPU checks in one call on a lent GPU machine (about 6 minutes on an H100), each
# bounded by a timeout so that what finished comes back:
#   1. correctness of the packed Triton kernels, then the ternary / binary product at H=2000,
#      batch 1 against cuBLAS fp16, and the packed LSTM step (bc+layer's fused step among them)
#      against cuDNN fp16, eager and in CUDA graphs (benchmarks/packed_gpu_speed.py);
#   2. sampling from the zoo's packed char models, symbols/s on the GPU beside the CPU
#      (benchmarks/zoo_sample_speed.py; needs fairseq: the wheels of recipes/zoo/gpu_wheels.sh
#      in .whl/, carried with the working tree).
#
#   OUT=/where/to PYTHON=python3 bash benchmarks/gpu_checks.sh   (default OUT: benchmarks/results/gpu)
#
# Raw outputs: $OUT/gpu_checks_<date>_{device,products_steps,sampling}.txt, the GPU named in
# the first. Without a CUDA GPU it says so and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
STEM="$OUT/gpu_checks_$(date +%Y-%m-%d)"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_checks.sh: no CUDA GPU for $PY here (no torch, or torch.cuda.is_available() is False): nothing to check" >&2
  exit 2
fi
if [ -d .whl ] && ! "$PY" -c "import fairseq" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/nq_site .whl/*.whl
  export PYTHONPATH="/tmp/nq_site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/nq_site/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  lscpu | grep 'Model name'; } > "$STEM"_device.txt 2>&1
timeout 330 "$PY" benchmarks/packed_gpu_speed.py --only check products steps \
  > "$STEM"_products_steps.txt 2>&1
echo "packed_gpu_speed.py: exit $?" >> "$STEM"_products_steps.txt
timeout 150 "$PY" benchmarks/zoo_sample_speed.py --device cpu cuda --length 300 --rounds 3 \
  --models ptb-char-bc-layer ptb-char-tc-weight ptb-char-bc-weight > "$STEM"_sampling.txt 2>&1
echo "zoo_sample_speed.py: exit $?" >> "$STEM"_sampling.txt
tail -n 3 "$STEM"_*.txt
