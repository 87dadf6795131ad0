"""y = x W^T with W = diag(s) B from packed codes B: a Triton kernel on GPU; on CPU the native
kernel for small batches, else PyTorch.

The kernel is an explicit option, ``NQ_PLUGIN_KERNEL`` (:func:`native.kernel_choice`):

* ``auto`` (default): GPU -> Triton when it imports, else PyTorch; CPU -> the native C++ kernel
  (``native.py``: computes from the packed words, compiled on first use) for products of at most
  ``native.MAX_NATIVE_BATCH`` rows when it builds, else PyTorch;
* ``native``: the native kernel for every CPU product, or an error;
* ``triton``: Triton for every GPU product, or an error;
* ``torch``: the exact PyTorch path everywhere, which unpacks B once per call (or once per
  :meth:`PackedMatrix.prepared` block, e.g. a whole sequence) and frees it afterwards, so only
  the packed words stay resident.

:func:`select_kernel` makes the choice for one product and logs each (device, kernel) pair once.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ...logs import LogOnce
from ..format import unpack_matrix
from . import native

logger = logging.getLogger(__name__)
_log_once = LogOnce(logger)


def triton_matmul():
    """The Triton entry point, or None when triton (or a GPU for it) is unavailable."""
    try:
        from .triton_kernels import packed_matmul
    except Exception as err:  # ImportError, or a triton that cannot initialise here
        _log_once("triton", f"nq_plugin: Triton kernel unavailable ({err}); using the exact "
                            "PyTorch path for packed weights", logging.WARNING)
        return None
    return packed_matmul


def triton_lstm_step():
    """The fused Triton LSTM step (:func:`triton_kernels.packed_lstm_step`), or None."""
    if triton_matmul() is None:
        return None
    from .triton_kernels import packed_lstm_step
    return packed_lstm_step


def select_kernel(matrix: "PackedMatrix", device: torch.device, rows: int) -> str:
    """``triton``, ``native`` or ``torch``: the kernel that multiplies ``rows`` input rows on
    ``device`` by ``matrix`` (dense fp matrices: always ``torch``)."""
    choice = native.kernel_choice()
    if matrix.bits == 32:
        kernel = "torch"
    elif device.type == "cuda":
        if choice == "torch":
            kernel = "torch"
        elif triton_matmul() is not None:
            kernel = "triton"
        elif choice == "triton":
            raise RuntimeError("NQ_PLUGIN_KERNEL=triton but the Triton kernel is unavailable "
                               "(see the log); unset it or use NQ_PLUGIN_KERNEL=torch")
        else:
            kernel = "torch"
    else:
        kernel = "native" if native.use_native(rows) else "torch"
    if matrix.bits != 32:
        _log_once(f"{device.type}:{kernel}", f"nq_plugin: packed products on {device.type} use "
                  f"the {kernel} kernel (NQ_PLUGIN_KERNEL={choice})")
    return kernel


class PackedMatrix:
    """A (R x n) weight in the packed format: ``planes`` of int32 words, per-row ``scale``,
    ``bits`` 1 or 2; or a dense fp matrix (``bits`` 32)."""

    def __init__(self, planes: Dict[str, torch.Tensor], scale: Optional[torch.Tensor], bits: int,
                 columns: int, dense: Optional[torch.Tensor] = None):
        self.planes, self.scale, self.bits, self.columns, self.dense_weight = (
            planes, scale, bits, columns, dense)

    @classmethod
    def dense(cls, weight: torch.Tensor) -> "PackedMatrix":
        return cls({}, None, 32, weight.shape[1], weight)

    def unpacked(self, dtype=torch.float32) -> torch.Tensor:
        """diag(s) B as a dense matrix (what the CPU path multiplies with): decoded by the native
        extension where it runs, else by PyTorch (one table lookup per plane)."""
        if self.bits == 32:
            return self.dense_weight.to(dtype)
        decoded = native.unpack(self.planes, self.bits, self.columns, self.scale)
        if decoded is not None:
            return decoded.to(dtype)
        return unpack_matrix(self.planes, self.bits, self.columns, dtype) * self.scale.to(dtype)[:, None]

    @property
    def device(self) -> torch.device:
        if self.bits == 32:
            return self.dense_weight.device
        return self.planes[next(iter(self.planes))].device

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, n) -> (N, R)."""
        if self.bits == 32:
            return F.linear(x, self.dense_weight.to(x.dtype))
        kernel = select_kernel(self, x.device, x.shape[0])
        if kernel == "triton":
            return triton_matmul()(x, self.planes, self.scale, self.bits, self.columns)
        if kernel == "native":
            return native.packed_gemv(x, self.planes, self.scale, self.bits,
                                      self.columns).to(x.dtype)
        return F.linear(x, self.unpacked(x.dtype))

    @contextlib.contextmanager
    def prepared(self, batch: int):
        """Yield a callable x -> x W^T for repeated use (the steps of a sequence)."""
        if self.bits == 32:
            weight = self.dense_weight
            yield lambda x: F.linear(x, weight.to(x.dtype))
            return
        if select_kernel(self, self.device, batch) != "torch":
            yield self.matmul  # computes from the packed words: nothing to unpack
            return
        weight = self.unpacked()
        try:
            yield lambda x: F.linear(x, weight.to(x.dtype))
        finally:
            del weight
