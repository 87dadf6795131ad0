"""The native CPU kernel for packed weights (``csrc/packed_gemv.cpp``): x W^T computed from the
packed words, no unpacking, exact fp32 activations -- for the small batches of token-by-token
inference (generation, streaming scoring). Compiled on first use with
``torch.utils.cpp_extension.load`` (``-O3 -march=native``: AVX-512 where the CPU has it) and
cached in torch's extensions folder (``TORCH_EXTENSIONS_DIR``); never at ``pip install``.

``NQ_PLUGIN_KERNEL`` chooses the kernel of packed products: ``auto`` (default: on CPU the native
kernel for small batches when it builds, else PyTorch; on GPU Triton when it imports, else
PyTorch), ``native`` (CPU: native for every batch, or an error), ``triton`` (GPU: Triton or an
error) or ``torch`` (the exact PyTorch path everywhere). Without a compiler ``auto`` falls back to
PyTorch and says so once in the log.
"""
from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_module = None
_failed = None
MAX_NATIVE_BATCH = 8  # beyond this, unpacking once and one GEMM is faster


def kernel_choice() -> str:
    choice = os.environ.get("NQ_PLUGIN_KERNEL", "auto").lower()
    if choice not in ("auto", "native", "triton", "torch"):
        raise ValueError(f"NQ_PLUGIN_KERNEL={choice!r}: use auto, native, triton or torch")
    return choice


def load():
    """The compiled extension, or None (auto mode, build failed: logged once)."""
    global _module, _failed
    if _module is not None:
        return _module
    if _failed is not None:
        if kernel_choice() == "native":
            raise RuntimeError(f"NQ_PLUGIN_KERNEL=native but the native kernel failed to build: "
                               f"{_failed}")
        return None
    with _lock:
        if _module is None and _failed is None:
            try:
                from torch.utils.cpp_extension import load as build
                src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc",
                                   "packed_gemv.cpp")
                _module = build(name="nq_plugin_packed_gemv", sources=[src],
                                extra_cflags=["-O3", "-march=native"], verbose=False)
                logger.info("nq_plugin: native packed kernel built (%s)", _module.__file__)
            except Exception as err:  # no compiler, no ninja, a build error
                _failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                logger.warning("nq_plugin: the native packed kernel could not be built (%s); "
                               "using the PyTorch path (set NQ_PLUGIN_KERNEL=torch to skip "
                               "the attempt)", _failed)
    return load()


def use_native(batch: int) -> bool:
    """Whether x W^T for ``batch`` rows on the CPU goes through the native kernel."""
    choice = kernel_choice()
    if choice in ("torch", "triton"):
        return False
    if choice == "native":
        return load() is not None
    return batch <= MAX_NATIVE_BATCH and load() is not None


def packed_gemv(x, planes, scale, bits: int, columns: int):
    module = load()
    if bits == 1:
        return module.packed_gemv(x.contiguous().float(), planes["plus"], None, scale.float(),
                                  columns)
    return module.packed_gemv(x.contiguous().float(), planes["nonzero"], planes["negative"],
                              scale.float(), columns)
