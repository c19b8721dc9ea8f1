"""A run dir's record, read back: the composed config and the command-line overrides that
``vhp_lightning.train`` wrote to ``<run dir>/.hydra/`` (``rundir.write_run_record``; Hydra's
layout, so a run dir Hydra wrote itself reads the same).

The reports (``vhp_lightning.reports``) and anything else that looks at finished runs read a run
dir through these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RECORD = ".hydra"  # the run's record: config.yaml, hydra.yaml, overrides.yaml


def record_path(run_dir: Path, name: str = "") -> Path:
    """``<run_dir>/.hydra/<name>`` (the folder itself without ``name``); ``name`` is
    ``config.yaml``, ``hydra.yaml`` or ``overrides.yaml``."""
    return run_dir / RECORD / name if name else run_dir / RECORD


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config (``.hydra/config.yaml``) as plain dicts and lists, its
    interpolations (``${paper.kappa}``) unresolved; ``{}`` when the file is empty.

    Raises:
        FileNotFoundError: ``run_dir`` holds no ``.hydra/config.yaml`` (not a run dir).
    """
    return yaml.safe_load(record_path(run_dir, "config.yaml").read_text()) or {}


def read_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides (``.hydra/overrides.yaml``) in the order given, e.g.
    ``["experiment=table2", "+table2=vhp_rewo", "seed=1"]``; ``[]`` when it has none or no
    such file."""
    path = record_path(run_dir, "overrides.yaml")
    items = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    return [str(item) for item in items]
