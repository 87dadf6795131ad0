"""The plugin's one native extension, built on first use: the packed inference kernel
(``csrc/packed_gemv.cpp``) and the normalized LSTM recurrence (``csrc/recurrence.cpp``).

Compiled with ``torch.utils.cpp_extension.load`` (``-O3 -march=native``; at::vec's AVX2 code
path where the CPU has AVX2, and its AVX-512 path in the recurrence's unit where the CPU has
AVX-512: ``csrc/recurrence.cpp``) and cached in torch's extensions folder (``TORCH_EXTENSIONS_DIR``,
else torch's default root), in a build folder of its own per checkout (:func:`build_directory`),
about 20 s the first time on 2 cores: the bindings include torch/python.h, the kernels ATen
alone, not the whole of torch/extension.h); never at ``pip install`` (an isolated build would
pull a CUDA torch). ``NQ_PLUGIN_MARCH=x86-64-v3`` builds a module of its own for AVX2 and FMA
without AVX-512 and its AVX-512 lookups reported unsupported: what an AVX2-only CPU runs,
measurable on an AVX-512 one.
Without a compiler, :func:`extension` returns None, the callers fall back to their PyTorch
paths and the reason is logged once; :func:`build_error` says why.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
from typing import Optional

from .backend import extensions_root, native_march

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_module = None
_failed: Optional[str] = None
SOURCES = ("bindings.cpp", "huge_pages.cpp", "packed_gemv.cpp", "packed_step.cpp",
           "packed_triples.cpp", "packed_wide.cpp", "recurrence.cpp", "step_gemm.cpp")
NAME = "nq_plugin_native_v40"  # bump when the sources' interface changes


def _name(march: str) -> str:
    """The extension's module name: one build per -march target (``native``: NAME)."""
    return NAME if march == "native" else f"{NAME}_{re.sub(r'[^A-Za-z0-9]', '_', march)}"


def build_directory(name: str, folder: str) -> str:
    """Where the module ``name`` built from the sources in ``folder`` is compiled and cached.

    torch keeps one folder per extension name and rewrites its build.ninja with the sources'
    absolute paths, so two checkouts of the plugin (a clone and a worktree, a venv's copy and a
    source tree) would rebuild the same folder in turn at every load, and replace a module that
    another process has loaded; the folder therefore carries a digest of the sources' folder,
    the Python and the torch build: ``<root>/<name>-<digest>``, ``<root>`` being
    ``TORCH_EXTENSIONS_DIR`` when set (:func:`nq_plugin.backend.extensions_root`), else torch's
    default root.
    """
    import torch
    from torch.utils.cpp_extension import get_default_build_root
    root = extensions_root() or get_default_build_root()
    key = "|".join((os.path.realpath(folder), sys.version, torch.__version__))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = os.path.join(root, f"{name}-{digest}")
    os.makedirs(path, exist_ok=True)
    return path


def _flags(march: str = "native"):
    # -fopenmp: at::parallel_for is inline OpenMP; the extension then shares torch's libgomp
    flags = ["-O3", f"-march={march}", "-fopenmp"]
    try:
        import torch
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an older torch: the portable at::vec code
        capability = "DEFAULT"
    if capability in ("AVX2", "AVX512"):
        flags += ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    if march != "native":  # an AVX2-only CPU's build: the AVX-512 lookups reported unsupported
        flags.append("-DNQ_AVX2_ONLY")
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
                march = native_march()
                folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
                _module = build(name=_name(march),
                                sources=[os.path.join(folder, s) for s in SOURCES],
                                extra_cflags=_flags(march), extra_ldflags=["-fopenmp"],
                                build_directory=build_directory(_name(march), folder),
                                verbose=False)
                logger.info("nq_plugin: native extension built (%s)", _module.__file__)
            except Exception as err:  # no compiler, no ninja, a build error
                _failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                logger.warning("nq_plugin: the native extension could not be built (%s); using "
                               "the PyTorch paths", _failed)
    return _module


def available() -> bool:
    """Whether the native extension builds and loads on this machine."""
    return extension() is not None


def build_error() -> Optional[str]:
    """Why the extension could not be built (None if it was, or was not tried yet)."""
    return _failed
