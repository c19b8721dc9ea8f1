"""Graph-based interpolation analysis at the end of training (sec. 2.3, 4.2; Fig. 3-8, 17).

Rank zero only, once at the end of ``fit`` (skipped under ``fast_dev_run``): runs
``vhp_lightning.analysis.interpolation.interpolation_analysis`` on the data points of one split and
writes its PNG/CSV files to ``dirpath``; logs the averages as ``interpolation/<name>`` and the
figures to TensorBoard/W&B when those loggers are active.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

from vhp_lightning.analysis.interpolation import interpolation_analysis
from vhp_lightning.callbacks.figures import log_image
from vhp_lightning.datamodules.batches import first_examples
from vhp_lightning.io.config_values import positive_int_or_none

SPLITS = ("train", "val", "test")


class InterpolationAnalysis(Callback):
    """Interpolations on ``n_graphs`` graphs x ``n_pairs`` endpoint pairs of the ``split`` data.

    Args:
        dirpath: output folder (``<run dir>/interpolation`` in the config).
        n_nodes, n_neighbors: graph size (App. F: pendulum 1000/18, CMU 2530/15, Faces 10000/18).
        n_graphs, n_pairs: Fig. 7 averages 10 graphs x 100 interpolations.
        n_strips: decoded paths drawn (Fig. 4/8 strips; trajectories for motion data).
        split: which data the endpoints come from; batches are ``(x, label)`` or ``(x,)``.
        max_points: use at most this many data points of the split (its first ones).
    """

    def __init__(
        self,
        dirpath: str,
        n_nodes: int = 1000,
        n_neighbors: int = 18,
        n_graphs: int = 10,
        n_pairs: int = 100,
        n_strips: int = 4,
        split: str = "test",
        max_points: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}. Choose one of: {', '.join(SPLITS)}.")
        self.dirpath, self.split, self.seed = Path(dirpath), split, int(seed)
        self.kwargs: dict[str, Any] = dict(
            n_nodes=int(n_nodes),
            n_neighbors=int(n_neighbors),
            n_graphs=int(n_graphs),
            n_pairs=int(n_pairs),
            n_strips=int(n_strips),
        )
        self.max_points = positive_int_or_none("max_points", max_points, "all")
        self.summary: dict[str, float] = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        self.run(trainer, pl_module)

    @rank_zero_only
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Run the analysis now; returns (and keeps in ``self.summary``) its averages."""
        x, labels = self._collect(trainer)
        self.summary = interpolation_analysis(
            pl_module.model, x, labels, self.dirpath, seed=self.seed, **self.kwargs
        )
        metrics = {f"interpolation/{k}": v for k, v in self.summary.items()}
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
        for png in sorted(self.dirpath.glob("*.png")):
            log_image(trainer, f"interpolation/{png.stem}", png)
        return self.summary

    def _collect(self, trainer: pl.Trainer) -> tuple[torch.Tensor, Any]:
        """The split's data points ``(N, *data_shape)`` and labels ``(N,)`` (or None); class
        labels become the datamodule's ``motion_names`` / ``class_names`` when it has them."""
        dm = trainer.datamodule
        if dm is None:
            raise RuntimeError("InterpolationAnalysis needs a LightningDataModule (datamodule=)")
        dm.setup("test" if self.split == "test" else "fit")
        loader = getattr(dm, f"{self.split}_dataloader")()
        x, labels = first_examples(loader, self.max_points, self.split)
        if labels is None:
            return x, None
        names = getattr(dm, "motion_names", None) or getattr(dm, "class_names", None)
        if names and not labels.is_floating_point():  # class names for the legends (Fig. 17)
            return x, np.asarray([str(n) or "(root)" for n in names])[labels.numpy()]
        return x, labels
