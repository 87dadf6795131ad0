"""The plugin's one native extension, built on first use: the packed inference kernel
(``csrc/packed_gemv.cpp``) and the normalized LSTM recurrence (``csrc/recurrence.cpp``).

Compiled with ``torch.utils.cpp_extension.load`` (``-O3 -march=native``; at::vec's AVX2 code
path where the CPU has AVX2) and cached in torch's extensions folder (``TORCH_EXTENSIONS_DIR``,
about 20 s the first time on 2 cores: the bindings include torch/python.h, the kernels ATen
alone, not the whole of torch/extension.h); never at ``pip install`` (an isolated build would pull a CUDA torch).
Without a compiler, :func:`extension` returns None, the callers fall back to their PyTorch
paths and the reason is logged once; :func:`build_error` says why.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_module = None
_failed: Optional[str] = None
SOURCES = ("bindings.cpp", "huge_pages.cpp", "packed_gemv.cpp", "packed_step.cpp",
           "packed_wide.cpp", "recurrence.cpp")
NAME = "nq_plugin_native_v27"  # bump when the sources' interface changes


def _flags():
    # -fopenmp: at::parallel_for is inline OpenMP; the extension then shares torch's libgomp
    flags = ["-O3", "-march=native", "-fopenmp"]
    try:
        import torch
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an older torch: the portable at::vec code
        capability = "DEFAULT"
    if capability in ("AVX2", "AVX512"):
        flags += ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return flags


def extension():
    """The compiled extension, or None when it cannot be built here (logged once)."""
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    with _lock:
        if _module is None and _failed is None:
            try:
                from torch.utils.cpp_extension import load as build
                folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
                _module = build(name=NAME, sources=[os.path.join(folder, s) for s in SOURCES],
                                extra_cflags=_flags(), extra_ldflags=["-fopenmp"],
                                verbose=False)
                logger.info("nq_plugin: native extension built (%s)", _module.__file__)
            except Exception as err:  # no compiler, no ninja, a build error
                _failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                logger.warning("nq_plugin: the native extension could not be built (%s); using "
                               "the PyTorch paths", _failed)
    return _module


def build_error() -> Optional[str]:
    """Why the extension could not be built (None if it was, or was not tried yet)."""
    return _failed
