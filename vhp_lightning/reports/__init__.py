"""Collectors over sweeps: read run dirs and ``results/*.csv``, write ``results/*.md``.

The pieces every collector shares live here: finding run dirs, reading a run's overrides and its
beta-scheme trace, and appending result rows to a CSV without ever overwriting one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vhp_lightning.io.files import atomic_open


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every run dir (holding ``.hydra/``) at or below ``paths``."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a folder (a run dir or a sweep dir)")
        runs += sorted(p.parent for p in path.rglob(".hydra") if p.is_dir())
    return runs


def overrides(job: Path) -> dict[str, str]:
    """A run's command-line overrides (``.hydra/overrides.yaml``) as ``{key: value}``, with a
    leading ``+`` dropped (``+table1=rewo`` -> ``{"table1": "rewo"}``)."""
    path = job / ".hydra" / "overrides.yaml"
    items = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    return {name.lstrip("+"): value for name, _, value in (str(i).partition("=") for i in items)}


def scheme_trace(job: Path) -> dict[str, np.ndarray]:
    """``step``, ``beta``, ``c_hat``, ``train_prior`` per logged step of a run's CSV log (the
    scheme's ``<name>/...`` columns); empty arrays when the run has none."""
    rows: dict[int, dict[str, float]] = {}
    for metrics_csv in sorted(job.glob("csv/**/metrics.csv")):
        for row in read_csv(metrics_csv):
            for key, value in row.items():
                name = key.rsplit("/", 1)[-1]
                if "/" in key and name in ("beta", "c_hat", "train_prior") and value:
                    rows.setdefault(int(float(row["step"])), {})[name] = float(value)
    steps = sorted(s for s, r in rows.items() if "beta" in r)
    out = {"step": np.array(steps, dtype=np.int64)}
    for name in ("beta", "c_hat", "train_prior"):
        out[name] = np.array([rows[s].get(name, math.nan) for s in steps])
    return out


def switch_step(trace: dict[str, np.ndarray]) -> int | None:
    """The first step of REWO's main phase in a ``scheme_trace`` (None: no phase switch seen)."""
    if not len(trace["step"]) or not np.isfinite(trace["train_prior"]).any():
        return None
    on = np.flatnonzero(trace["train_prior"] > 0.5)
    return int(trace["step"][on[0]]) if len(on) and on[0] > 0 else None


def append_rows(
    csv_path: Path, rows: list[dict[str, Any]], columns: Sequence[str], key: Sequence[str]
) -> tuple[int, int]:
    """Append the rows whose ``key`` columns are new to ``csv_path``; returns (added, kept).

    A row already there is never overwritten. Written to a temporary file and renamed: an
    interrupted write leaves the old CSV whole.
    """
    existing = read_csv(csv_path) if csv_path.is_file() else []
    have = {tuple(str(r.get(k, "")) for k in key) for r in existing}
    new = []
    for r in rows:
        if (k := tuple(str(r.get(c, "")) for c in key)) not in have:
            have.add(k)
            new.append(r)
    if new:
        with atomic_open(csv_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows([*existing, *new])
    return len(new), len(rows) - len(new)


def mean_std(values: list[float], digits: int = 3) -> str:
    """``"m"`` for one value, ``"m ± s"`` (sample std) for several, ``"—"`` for none."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "—"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def floats(rows: list[dict[str, str]], key: str) -> list[float]:
    """The non-empty values of column ``key`` as floats."""
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]
