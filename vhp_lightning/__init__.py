"""vhp-lightning: variational hierarchical priors trained with REWO (Klushyn et al., 2019).

``vhp_lightning.load(path)`` returns a trained model for notebooks (``vhp_lightning.api``);
training and evaluation run as ``python -m vhp_lightning.train`` / ``python -m
vhp_lightning.evaluate``. The API is imported on first use, so ``import vhp_lightning.bounds``
stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("vhp-lightning")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in ("load", "TrainedModel"):
        from vhp_lightning import api

        return getattr(api, name)
    raise AttributeError(f"module 'vhp_lightning' has no attribute {name!r}")


__all__ = ["TrainedModel", "load"]
