#!/usr/bin/env bash
# What an AVX2-only CPU runs, measured on an AVX-512 one: benchmarks/inference_step.py with every
# library held to AVX2 -- our extension built for -march=x86-64-v3 with its AVX-512 lookups
# reported unsupported (NQ_PLUGIN_MARCH, docs/environment.md), torch's int8 (FBGEMM), its fp32
# LSTM (oneDNN) and ATen's kernels through their own ISA switches. The same core's AVX2 is not
# an AVX2-only CPU's (its cache, clock and 256-bit units are the AVX-512 CPU's): the ratios
# say how the AVX2 code paths compare, not what an older CPU measures.
#
#   bash benchmarks/avx2_emulated.sh [inference_step.py args, e.g. --hidden 512 2000]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"
if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; fi
echo "# AVX2 held: NQ_PLUGIN_MARCH=x86-64-v3 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
NQ_PLUGIN_MARCH=x86-64-v3 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
    ONEDNN_MAX_CPU_ISA=AVX2 "$PYTHON" -W ignore "$ROOT/benchmarks/inference_step.py" "$@"
