"""Collectors over sweeps: read run dirs and ``results/*.csv``, write ``results/*.md``."""

from __future__ import annotations

import csv
from pathlib import Path


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
