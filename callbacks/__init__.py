"""Lightning callbacks: the beta-schemes (REWO, GECO, ...) and run-keeping helpers."""

from callbacks.base import BetaScheme, ConstraintModule
from callbacks.geco import GECO
from callbacks.rewo import REWO
from callbacks.rewo_alt import REWOAlt
from callbacks.schedules import ConstantBeta, WarmUp

__all__ = ["GECO", "REWO", "BetaScheme", "ConstantBeta", "ConstraintModule", "REWOAlt", "WarmUp"]
