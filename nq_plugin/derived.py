"""Values derived from a module's tensors and kept between calls (the eval-mode quantized weights,
decoded packed matrices, oneDNN layouts, fused-step plans, CUDA graph recordings): one cache
type, one key.

The key of a module's tensors (:func:`tensors_key`) is the identity, version counter, dtype and
device of each of its parameters and buffers: an in-place write (an optimizer step,
``load_state_dict``'s copy) bumps the version, ``.to()`` / ``.half()`` make new tensors -- any
of these drops everything derived. A write through ``.data`` bypasses the version counters:
call :meth:`DerivedCache.clear` after one. Copies and pickles of a module start with an empty
cache (what it holds is derived, and a oneDNN layout cannot be copied).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import torch.nn as nn


def tensors_key(module: nn.Module) -> Tuple:
    """Storage, version and dtype of every parameter and buffer of ``module`` and its
    submodules (a move to another device gives a tensor new storage)."""
    return tuple((t.data_ptr(), t._version, t.dtype) for m in module.modules()
                 for tensors in (m._parameters, m._buffers) for t in tensors.values()
                 if t is not None)


class DerivedCache:
    """Named values derived from one module's tensors: :meth:`get` builds an entry on first use,
    again when its own key changes, and everything is dropped when the module's tensors change
    (:func:`tensors_key`)."""

    def __init__(self):
        self._tensors: Optional[Tuple] = None
        self._entries: Dict[Hashable, Tuple[Hashable, Any]] = {}

    def get(self, module: nn.Module, name: Hashable, key: Hashable, build: Callable[[], Any]):
        """The entry ``name`` for ``key``, built by ``build()`` when missing or stale."""
        tensors = tensors_key(module)
        if tensors != self._tensors:
            self._entries.clear()
            self._tensors = tensors
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            entry = (key, build())
            self._entries[name] = entry
        return entry[1]

    def peek(self, name: Hashable) -> Any:
        """The entry ``name`` as kept (None if absent), without checking the tensors."""
        entry = self._entries.get(name)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()
        self._tensors = None

    def __len__(self) -> int:
        return len(self._entries)

    def __reduce__(self):  # copies and pickles start empty
        return (DerivedCache, ())
