"""Normalizations of a weight-input product: none, weight, layer, batch, power."""
from .base import NORMALIZATIONS, Normalization, build_normalization, register_normalization
from .weight import WeightNorm
from .layer import LayerNorm
from .batch import BatchNorm
from .power import PowerNorm

__all__ = ["NORMALIZATIONS", "Normalization", "build_normalization", "register_normalization",
           "WeightNorm", "LayerNorm", "BatchNorm", "PowerNorm"]
