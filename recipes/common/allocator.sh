# Sourced by the recipes' train scripts: keep the memory a training step frees in the process.
# glibc's malloc hands blocks above its mmap threshold (128 KB, raised by itself to at most
# 32 MB) back to the system when they are freed, and trims the heap's free top, so a step's
# large buffers (sequential MNIST's (784, 100, 400) gate inputs: 125 MB; PTB char's 52 MB) are
# page-faulted and zeroed again at every step. With these two settings they are reused:
# benchmarks/allocator_settings.py measures sMNIST and PTB char training faster with them
# (benchmarks/README.md). Values you set yourself are kept; NQ_KEEP_GLIBC_MALLOC=1 keeps
# glibc's defaults.
if [ -z "${NQ_KEEP_GLIBC_MALLOC:-}" ]; then
  export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4294967296}"
  export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"
fi
