"""Weight quantizers (fp, bc, tc, bwn, twn, lab, lat) with a straight-through gradient."""
from .base import QUANTIZERS, Quantizer, build_quantizer, register_quantizer, straight_through
from .fp import FullPrecision
from .binary import BinaryConnect, BinaryWeightNetwork, LossAwareBinarization
from .ternary import LossAwareTernarization, TerConnect, TernaryWeightNetwork
from .second_moment import OptimizerSecondMoment, attach_optimizer

__all__ = [
    "QUANTIZERS", "Quantizer", "build_quantizer", "register_quantizer", "straight_through",
    "FullPrecision", "BinaryConnect", "BinaryWeightNetwork", "LossAwareBinarization",
    "TerConnect", "TernaryWeightNetwork", "LossAwareTernarization",
    "OptimizerSecondMoment", "attach_optimizer",
]
