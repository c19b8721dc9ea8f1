"""Lightning callbacks: the beta-schemes (REWO, ...) and run-keeping helpers."""

from callbacks.base import BetaScheme, ConstraintModule
from callbacks.rewo import REWO

__all__ = ["REWO", "BetaScheme", "ConstraintModule"]
