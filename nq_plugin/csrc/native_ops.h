// The operations of the native recurrence on one step's (B, F) term, before gain and shift (what
// each does: nq_plugin/norm/base.py, NativeForm, and recurrence.cpp's header): the one list of
// them, for recurrence.cpp's enum and, through the extension's native_ops(), for Python, which
// names an operation and looks its number up there (nothing copies the numbers by hand).
#pragma once

#define NQ_NATIVE_OPS(X) \
  X(IDENTITY, 0)         \
  X(ROW_BLOCKS, 1)       \
  X(BATCH, 2)            \
  X(FIXED, 3)            \
  X(POWER_RUNNING, 4)    \
  X(POWER_WARMUP, 5)     \
  X(AFFINE, 6)
