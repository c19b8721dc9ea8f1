"""Lightning callbacks: the beta-schemes (REWO, GECO, ...) and run-keeping helpers."""

from vhp_lightning.callbacks.base import BetaScheme, ConstraintModule
from vhp_lightning.callbacks.geco import GECO
from vhp_lightning.callbacks.rewo import REWO
from vhp_lightning.callbacks.rewo_alt import REWOAlt
from vhp_lightning.callbacks.schedules import ConstantBeta, WarmUp

__all__ = ["GECO", "REWO", "BetaScheme", "ConstantBeta", "ConstraintModule", "REWOAlt", "WarmUp"]
