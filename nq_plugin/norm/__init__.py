"""Normalizations of a weight-input product: none, weight, layer, batch, power."""
from .base import (NORMALIZATIONS, BoundNotDefined, FoldingNotSupported, NativeForm,
                   NoNormalization, Normalization, build_normalization, normalization_class,
                   register_normalization)
from .folded import FoldedAffine, FoldedIdentity, FoldedNorm, FoldedSharedAffine
from .options import NormOptions
from .weight import WeightNorm
from .layer import LayerNorm
from .batch import BatchNorm
from .power import PowerNorm

__all__ = ["NORMALIZATIONS", "BoundNotDefined", "FoldingNotSupported", "FoldedAffine",
           "FoldedIdentity", "FoldedNorm", "FoldedSharedAffine", "NativeForm", "NoNormalization",
           "Normalization", "NormOptions", "build_normalization", "normalization_class",
           "register_normalization", "WeightNorm", "LayerNorm", "BatchNorm", "PowerNorm"]
