"""Config plumbing: OmegaConf resolvers, instantiating config groups, and early validation."""

from __future__ import annotations

import math
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vhp_lightning.checkpoint import load_checkpoint

CONFIG_MODULE = "vhp_lightning.conf"  # where the Hydra configs live (the repo's `conf/`)


def _prod(values: Any) -> int:
    """``${prod:${dataset.data_shape}}`` -> the number of data dimensions, e.g. 1*16*16 = 256."""
    return int(math.prod(int(v) for v in values))


def register_resolvers() -> None:
    """Register the resolvers our configs use (idempotent)."""
    if not OmegaConf.has_resolver("prod"):
        OmegaConf.register_new_resolver("prod", _prod)


register_resolvers()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry with a ``_target_`` of a dict-shaped group (callbacks, logger)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def validate(cfg: DictConfig) -> None:
    """Checks that need no model or data: fail before anything expensive starts."""
    if cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path)  # raises CheckpointError naming the problem and the fix
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
