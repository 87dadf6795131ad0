#!/usr/bin/env bash
# The wheels fairseq-train needs on a lent GPU machine (Python 3.12 with torch, numpy, sacrebleu,
# sentencepiece, safetensors and huggingface_hub already there, no network), into DIR:
#
#   bash recipes/zoo/gpu_wheels.sh [DIR]       (default .whl; add it to .git/info/exclude)
#
# ve-fairseq's wheel is slimmed (about 20 MB -> 7 MB) so that the repository and the wheels fit
# what such a machine receives (64 MiB): it loses the compiled helpers that only
# non-autoregressive translation, BASE layers and alignment training load, and only when used
# (libnat, libbase, alignment_train_cpu_binding), and the examples' data files (.npy, .ipynb,
# images); its RECORD is rewritten to match. On the machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
set -euo pipefail
DIR="${1:-.whl}"
mkdir -p "$DIR"
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for p in ve-fairseq==0.12.3 hydra-core==1.3.8 omegaconf==2.3.1 bitarray==3.12.3 cffi pycparser; do
  python3 -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$DIR" "$p"
done
python3 -m pip wheel -q --no-deps -w "$DIR" antlr4-python3-runtime==4.9.3  # sdist only
python3 - "$DIR" <<'PY'
import glob, os, re, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "ve_fairseq-*.whl"))[0]
drop = re.compile(r"(^|/)(libnat|libbase|alignment_train_cpu_binding)[.][^/]*[.]so$"
                  r"|^fairseq/examples/.*[.](npy|ipynb|png|jpg|gif|pdf)$")
tmp = wheel + ".tmp"
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if drop.search(info.filename):
            continue
        data = src.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True)
                            if not drop.search(line.split(b",")[0].decode()))
        dst.writestr(info, data)
os.replace(tmp, wheel)
PY
ls -la "$DIR"
