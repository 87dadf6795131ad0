"""Execution choices, made in one place: how the LSTM loop runs, which kernel multiplies packed
weights, the activations of the fused CPU step and the table lookup of the CPU's packed
products -- an enum each, held by one frozen :class:`Backend`.

The choices come from the environment, read once (on first use) by :func:`current`::

    NQ_PLUGIN_RECURRENCE=python fairseq-train ...

and can be set in code for a block, which wins over the environment::

    from nq_plugin import backend
    with backend.use(recurrence="python", packed_kernel="torch"):
        model(x)

Every environment variable the package reads is listed in :data:`ENVIRONMENT` (and in
docs/environment.md); nothing outside this module and the console commands reads the
environment. The paths (:func:`zoo_dir`, :func:`zoo_cache`) and the torchrun launch facts are
read when used, so one process may point at another zoo.

The choices only say what is wanted: whether the native extension builds
(:func:`nq_plugin.native.available`; it is compiled for :func:`native_march`) and whether a
normalization has a native form decide the rest, in nq_plugin/nn/recurrence.py and
nq_plugin/packed/kernels/.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass
from enum import Enum
from typing import Iterator, List, Mapping, NamedTuple, Optional


class Recurrence(str, Enum):
    """How the LSTM's loop over time steps runs (nq_plugin/nn/recurrence.py)."""
    AUTO = "auto"      # the native loop where it builds and both normalizations have a native
    #                    form, else Python
    NATIVE = "native"  # the native loop, or an error saying why it cannot run
    PYTHON = "python"  # the Python loop (autograd through every step)


class PackedKernel(str, Enum):
    """The kernel of products with packed weights (nq_plugin/packed/kernels/)."""
    AUTO = "auto"      # CPU: native for small batches when it builds, else PyTorch;
    #                    GPU: Triton when it imports, else PyTorch
    NATIVE = "native"  # CPU: native for every batch, or an error
    TRITON = "triton"  # GPU: Triton, or an error
    TORCH = "torch"    # the exact PyTorch path everywhere


class Activations(str, Enum):
    """The activations of the fused CPU step's recurrent product (packed models)."""
    FP32 = "fp32"  # exact
    INT8 = "int8"  # h quantized per row to int8: faster, inexact


class Lookup(str, Enum):
    """The table lookup of the CPU's exact (fp32-activation) packed products
    (nq_plugin/csrc/packed_gemv.cpp)."""
    AUTO = "auto"        # wide where the CPU has AVX-512 (F and VL), else triples where the
    #                      extension is an AVX2 build and they measure faster than the pairs
    #                      here (native.triples_speedup), else pairs
    WIDE = "wide"        # nibbles, and a fused step's W_h by a 32-entry table per 3 ternary
    #                      or 5 binary inputs (AVX-512F), or an error
    NIBBLES = "nibbles"  # a 16-value table per 4 inputs (AVX-512VL), or an error
    TRIPLES = "triples"  # pairs, and a fused step's matrices by an 8-value table per 3 inputs
    #                      (AVX2), or an error
    PAIRS = "pairs"      # a 4-value table per 2 inputs (AVX2; portable without)


class StepSplit(str, Enum):
    """How a team of several threads splits the native LSTM loop's step products
    (nq_plugin/csrc/recurrence.cpp; nq_plugin/nn/step_products.py, team_splits_columns)."""
    AUTO = "auto"        # from H=192 on (COLUMN_SPLIT_MIN_HIDDEN), in training the faster of
    #                      the two on the loop's first calls (step_products.timed_loop), in
    #                      eval by columns; below, rows
    COLUMNS = "columns"  # by output columns at every size: each thread a part of W_h
    ROWS = "rows"        # by batch rows: each thread its rows times the whole W_h


class StepGemm(str, Enum):
    """The layout of W_h in the native training loop's step products: the threads' parts of a
    product split by columns, the whole of it in one split by rows
    (nq_plugin/nn/step_products.py, part_layout)."""
    AUTO = "auto"      # the fastest of those this build runs, timed once a shape, split and
    #                    process as the team runs it (oneDNN's only by 1.1x)
    PLAIN = "plain"    # plain (K, N_part) copies through at::mm (the BLAS torch links)
    ONEDNN = "onednn"  # oneDNN's blocked layout (float32), or an error
    PANELS = "panels"  # the extension's own step GEMM (csrc/step_gemm.cpp: float32, AVX2 and
    #                    FMA builds), or an error


class EnvironmentVariable(NamedTuple):
    name: str
    default: str
    meaning: str


ENVIRONMENT: List[EnvironmentVariable] = [
    EnvironmentVariable("NQ_PLUGIN_RECURRENCE", "auto",
                        "the LSTM loop: auto | native | python (Backend.recurrence)"),
    EnvironmentVariable("NQ_PLUGIN_KERNEL", "auto",
                        "packed products: auto | native | triton | torch "
                        "(Backend.packed_kernel)"),
    EnvironmentVariable("NQ_PLUGIN_ACTIVATIONS", "fp32",
                        "the fused CPU step of packed models: fp32 (exact) | int8 (faster, "
                        "inexact) (Backend.activations)"),
    EnvironmentVariable("NQ_PLUGIN_LOOKUP", "auto",
                        "the CPU's exact packed products: auto | wide (AVX-512) | nibbles "
                        "(AVX-512) | triples (AVX2) | pairs (Backend.lookup)"),
    EnvironmentVariable("NQ_PLUGIN_STEP_SPLIT", "auto",
                        "how the native LSTM loop's threads split each step's products: auto | "
                        "columns | rows (Backend.step_split)"),
    EnvironmentVariable("NQ_PLUGIN_STEP_GEMM", "auto",
                        "the layout of W_h in the native training loop's step products: auto "
                        "| plain | onednn | panels (Backend.step_gemm)"),
    EnvironmentVariable("NQ_PLUGIN_MARCH", "native",
                        "the -march the native extension is compiled for: native (this CPU) or "
                        "x86-64-v3 (AVX2 and FMA, no AVX-512; a build of its own)"),
    EnvironmentVariable("NQ_ZOO_DIR", "the zoo nq_plugin ships",
                        "a zoo of one's own: a folder with manifest.json and models/NAME"),
    EnvironmentVariable("NQ_ZOO_CACHE", "~/.cache/nq_plugin/zoo",
                        "where packed copies the bundle leaves out are rebuilt"),
    EnvironmentVariable("WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT", "unset",
                        "set by torchrun: CPU data-parallel training (nq_plugin/distributed.py)"),
    EnvironmentVariable("OMP_THREAD_LIMIT, OMP_DYNAMIC", "none, false",
                        "OpenMP's own, honoured: where a region may get fewer threads than "
                        "torch's, no oneDNN products (nq_plugin/nn/step_products.py)"),
]

_FIELDS = {"recurrence": ("NQ_PLUGIN_RECURRENCE", Recurrence),
           "packed_kernel": ("NQ_PLUGIN_KERNEL", PackedKernel),
           "activations": ("NQ_PLUGIN_ACTIVATIONS", Activations),
           "lookup": ("NQ_PLUGIN_LOOKUP", Lookup),
           "step_split": ("NQ_PLUGIN_STEP_SPLIT", StepSplit),
           "step_gemm": ("NQ_PLUGIN_STEP_GEMM", StepGemm)}


def parse(field: str, value, source: Optional[str] = None) -> Enum:
    """``value`` (a string or the enum) as the enum of ``field``; a clear error otherwise."""
    name, kind = _FIELDS[field]
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).lower())
    except ValueError:
        values = [k.value for k in kind]
        choices = ", ".join(values[:-1]) + " or " + values[-1]
        raise ValueError(f"{source or name}={value!r}: use {choices}") from None


@dataclass(frozen=True)
class Backend:
    """The execution choices (see the module doc). Strings are accepted and checked."""
    recurrence: Recurrence = Recurrence.AUTO
    packed_kernel: PackedKernel = PackedKernel.AUTO
    activations: Activations = Activations.FP32
    lookup: Lookup = Lookup.AUTO
    step_split: StepSplit = StepSplit.AUTO
    step_gemm: StepGemm = StepGemm.AUTO

    def __post_init__(self):
        for f in _FIELDS:
            object.__setattr__(self, f, parse(f, getattr(self, f), f))

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> "Backend":
        environ = os.environ if environ is None else environ
        return cls(**{f: parse(f, environ[name], name) for f, (name, _) in _FIELDS.items()
                      if environ.get(name)})

    def label(self, field: str) -> str:
        """``NAME=value`` of one choice, for messages."""
        return f"{_FIELDS[field][0]}={getattr(self, field).value}"


_environment: Optional[Backend] = None
_overrides: List[Backend] = []


def current() -> Backend:
    """The choices in force: the innermost :func:`use` block's, else the environment's (read
    on the first call; an invalid value raises here, naming the variable)."""
    global _environment
    if _overrides:
        return _overrides[-1]
    if _environment is None:
        _environment = Backend.from_environ()
    return _environment


@contextlib.contextmanager
def use(backend: Optional[Backend] = None, **changes) -> Iterator[Backend]:
    """Run a block with ``backend`` (default: the current one) changed by ``changes``
    (``recurrence=``, ``packed_kernel=``, ``activations=``, ``lookup=``, strings or enums)."""
    chosen = dataclasses.replace(backend or current(), **changes)
    _overrides.append(chosen)
    try:
        yield chosen
    finally:
        _overrides.remove(chosen)


MARCHES = ("native", "x86-64-v3")


def native_march() -> str:
    """``$NQ_PLUGIN_MARCH``: the gcc ``-march`` of the native extension, ``native`` (this CPU's
    instruction set, the default) or ``x86-64-v3`` (AVX2 and FMA, no AVX-512: what an
    AVX2-only CPU runs, measurable on an AVX-512 one), each a build of its own."""
    value = os.environ.get("NQ_PLUGIN_MARCH") or "native"
    if value not in MARCHES:
        raise ValueError(f"NQ_PLUGIN_MARCH={value!r}: use {' or '.join(MARCHES)}")
    return value


def extensions_root() -> Optional[str]:
    """``$TORCH_EXTENSIONS_DIR``, torch's own variable for where it compiles extensions, or
    None (torch's default root): the native extension's build folders go under it
    (:func:`nq_plugin.native.build_directory`)."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or None


def zoo_dir() -> Optional[str]:
    """``$NQ_ZOO_DIR`` (a zoo of one's own), or None."""
    value = os.environ.get("NQ_ZOO_DIR")
    return os.path.abspath(value) if value else None


def zoo_cache() -> Optional[str]:
    """``$NQ_ZOO_CACHE``, or None."""
    return os.environ.get("NQ_ZOO_CACHE") or None


@functools.lru_cache(maxsize=None)
def omp_thread_limit() -> Optional[int]:
    """OpenMP's thread limit, ``$OMP_THREAD_LIMIT`` (the runtime reads it once, at start-up,
    and so does this), or None where it sets none (a value the runtime would ignore
    included)."""
    try:
        limit = int(os.environ.get("OMP_THREAD_LIMIT", "").strip())
    except ValueError:
        return None
    return limit if limit > 0 else None


@functools.lru_cache(maxsize=None)
def omp_dynamic() -> bool:
    """Whether OpenMP may give a parallel region fewer threads than asked (``$OMP_DYNAMIC``
    true: libgomp then gives fewer on a loaded machine); read once, as the runtime reads it.
    Anything but a plain false counts as true here (the cautious side)."""
    value = os.environ.get("OMP_DYNAMIC", "").strip().lower()
    return value not in ("", "false", "0", "no", "off")


TORCHRUN_KEYS = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_launch() -> Optional[dict]:
    """torchrun's variables when this process was launched by it (all set), else None."""
    if not all(k in os.environ for k in TORCHRUN_KEYS):
        return None
    return {k: os.environ[k] for k in TORCHRUN_KEYS}
