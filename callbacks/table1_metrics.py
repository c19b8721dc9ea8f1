"""Table 1's latent metrics during training (sec. 4.1, App. B.3): one row per snapshot.

``PendulumMetrics`` encodes the evaluation split every ``every_n_steps`` steps and when ``fit``
ends, calls each metric of its ``metrics`` list on that ``LatentSnapshot``
(``vhp_lightning.analysis.pendulum``: a function returning named numbers) and appends one row
(step, beta, C_t, then every number) to ``<dirpath>/snapshots.csv``. The last row, at the end of
training, is ``<dirpath>/pendulum_metrics.json``, which ``report pendulum_table1`` collects. A
new metric is a function in ``analysis/pendulum.py`` and a line in ``conf/callbacks/pendulum.yaml``
(docs/extending.md). The pictures of the same steps are ``callbacks.figures.PendulumFigures``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from hydra.utils import get_method
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

from vhp_lightning.analysis.pendulum import LatentSnapshot
from vhp_lightning.callbacks.base import BetaScheme, find_scheme
from vhp_lightning.callbacks.figures import checked_rows, encode_split
from vhp_lightning.io.config_values import non_negative_int, positive_int
from vhp_lightning.io.files import write_json, write_text

Metric = Callable[[LatentSnapshot], Mapping[str, float]]
LOGGED = ("arcsin_ols_error", "polar_ols_error", "knn_angle_error")  # test/<name> at the end


class PendulumMetrics(Callback):
    """Table 1's metrics of the latent space every ``every_n_steps`` steps and at the end.

    Args:
        dirpath: output folder (``<run dir>/figures`` in the config) of ``snapshots.csv`` and
            ``pendulum_metrics.json``.
        metrics: functions ``LatentSnapshot -> {name: value}``, or their dotted names (as the
            config lists them), called in order; the names they return become the columns (a
            name two metrics share is refused).
        every_n_steps: snapshot cadence (0: only at the end).
        n_prior_samples: draws z ~ p(z) in each snapshot.
        split: ``"val"`` or ``"test"``; the whole split is encoded. Its batches must be
            ``(x, angle)`` with a float angle (the pendulum's).
    """

    def __init__(
        self,
        dirpath: str,
        metrics: Sequence[Metric | str],
        every_n_steps: int = 5_000,
        n_prior_samples: int = 2_000,
        split: str = "test",
    ) -> None:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if not metrics or not all(callable(m) or isinstance(m, str) for m in metrics):
            raise ValueError(
                "metrics must be a non-empty list of functions LatentSnapshot -> {name: value} "
                "or their dotted names (e.g. vhp_lightning.analysis.pendulum.angle_metrics)"
            )
        self.dirpath = Path(dirpath)
        self.metrics: list[Metric] = [_resolve(m) for m in metrics]
        self.every_n_steps = non_negative_int(
            "every_n_steps", every_n_steps, means="0 = only at the end"
        )
        self.n_prior_samples = positive_int("n_prior_samples", n_prior_samples)
        self.split = split
        self.snapshots: list[dict[str, float]] = []
        self._scheme: BetaScheme | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scheme = find_scheme(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
    ) -> None:
        """A snapshot at every ``every_n_steps``-th step (``outputs``, ``batch`` unused)."""
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self.snapshot(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        if self.snapshot(trainer, pl_module) is not None:
            self._write_final(trainer)

    @rank_zero_only
    def snapshot(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, float] | None:
        """Measure every metric at this step; the row replaces one of the same step in
        ``snapshots.csv`` (written whole, atomically). Returns the row."""
        means, stds, angles, prior = encode_split(
            trainer, pl_module, self.split, None, self.n_prior_samples
        )
        if angles is None or not np.issubdtype(angles.dtype, np.floating):
            raise ValueError(
                "PendulumMetrics needs batches (x, angle) with a float angle (the pendulum's); "
                "for other data drop callbacks.pendulum_metrics (use callbacks=default)."
            )
        snap = LatentSnapshot(means, stds, angles, prior, pl_module.model)
        scheme = self._scheme
        row: dict[str, float] = {
            "step": trainer.global_step,
            "beta": float(getattr(pl_module, "beta", 1.0)),
            "c_hat": float("nan") if scheme is None or scheme.c_hat is None else scheme.c_hat,
        }
        for metric in self.metrics:
            values = dict(metric(snap))
            if twice := sorted(set(values) & set(row)):
                raise ValueError(f"metric {metric!r} returns names already taken: {twice}")
            row.update(values)
        self.snapshots = [r for r in self.snapshots if r["step"] != row["step"]] + [row]
        _write_csv(self.dirpath / "snapshots.csv", self.snapshots)
        return row

    @rank_zero_only
    def _write_final(self, trainer: pl.Trainer) -> None:
        """``pendulum_metrics.json`` (the last row) and its three errors to the loggers."""
        row = dict(self.snapshots[-1])
        write_json(self.dirpath / "pendulum_metrics.json", row, default=float)
        logged = {f"{self.split}/{k}": v for k, v in row.items() if k in LOGGED}
        for lg in trainer.loggers:
            lg.log_metrics(logged, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = checked_rows(state_dict, "snapshots", dict)


def _resolve(metric: Metric | str) -> Metric:
    """A metric function, or the function its dotted name names (``ValueError`` naming it when
    it does not resolve to a function)."""
    if callable(metric):
        return metric
    try:
        found = get_method(metric)
    except Exception as err:  # Hydra wraps the import error
        raise ValueError(
            f"callbacks.pendulum_metrics.metrics: {metric!r} does not name a function "
            f"({err}); give a dotted name such as vhp_lightning.analysis.pendulum.angle_metrics"
        ) from err
    return found


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """All rows as one CSV (the union of their keys, empty where a row lacks one), atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join(f"{r.get(k, '')}" for k in keys) for r in rows]
    write_text(path, "\n".join(lines) + "\n")
