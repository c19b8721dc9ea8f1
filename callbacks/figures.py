"""Evaluation and figures during training: the pendulum's Fig. 2 and Table 1 metric.

Rank zero only, every ``every_n_steps`` steps (off the hot path: one forward pass over the
evaluation split), and once at the end of ``fit``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

from vhp_lightning.pendulum_metrics import (
    knn_angle_error,
    latent_angle_report,
    prior_fit_report,
)
from vhp_lightning.plots import plot_beta_trace, plot_posterior_and_prior


class PendulumFigures(Callback):
    """Fig. 2 snapshots every ``every_n_steps`` and the latent-angle errors at the end.

    Writes ``<dirpath>/latents_step<k>.png``, ``beta_trace.png`` and ``pendulum_metrics.json``
    (``polar_ols_error``, ``knn_angle_error``, ``polar_slope``, the step and beta) and logs the
    figures to TensorBoard/W&B when those loggers are active. Needs batches ``(x, angle)``.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 5_000,
        n_prior_samples: int = 2_000,
        split: str = "test",
    ) -> None:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self.n_prior_samples = int(n_prior_samples)
        self.split = split
        self.trace: list[tuple[int, float, float]] = []
        self.snapshots: list[dict[str, float]] = []
        self.kappa_sq: float | None = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        c_hat = next(
            (float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/c_hat")),
            float("nan"),
        )
        kappa = next(
            (float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/kappa_sq")), None
        )
        self.kappa_sq = kappa if kappa is not None else self.kappa_sq
        self.trace.append((step, float(getattr(pl_module, "beta", 1.0)), c_hat))
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self._snapshot(trainer, pl_module, f"latents_step{step}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        snapshot = self._snapshot(trainer, pl_module, f"latents_step{trainer.global_step}")
        if snapshot is not None:  # rank zero
            self._write_metrics(trainer)
            self._write_trace(trainer)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        dm = trainer.datamodule
        dm.setup("test")
        loader = dm.test_dataloader() if self.split == "test" else dm.val_dataloader()
        was_training = pl_module.training
        pl_module.eval()
        means, stds, angles = [], [], []
        with torch.random.fork_rng(devices=[]):  # keep the training RNG stream untouched
            for x, angle in loader:
                mean, logvar = pl_module.model.encode(x.to(pl_module.device))
                means.append(mean.float().cpu())
                stds.append((0.5 * logvar).exp().float().cpu())
                angles.append(angle)
            prior = pl_module.model.sample_prior(self.n_prior_samples).float().cpu()
        pl_module.train(was_training)
        return (
            torch.cat(means).numpy(),
            torch.cat(stds).numpy(),
            torch.cat(angles).numpy(),
            prior.numpy(),
        )

    @rank_zero_only
    def _snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str):
        """Draw Fig. 2's panels, keep the arrays (``<name>.npz``) and append one row of
        metrics and prior-fit diagnostics to ``snapshots.csv`` (Figs. 2, 11-15 over steps)."""
        means, stds, angles, prior = self._encode(trainer, pl_module)
        beta = float(getattr(pl_module, "beta", 1.0))
        title = f"step {trainer.global_step}, beta = {beta:.3g}"
        self._save(trainer, name, plot_posterior_and_prior(means, stds, angles, prior, title))
        np.savez_compressed(
            self.dirpath / f"{name}.npz", means=means, stds=stds, angles=angles, prior=prior
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            fit = prior_fit_report(pl_module.model, *map(torch.from_numpy, (means, prior)))
        # The same kNN read through the posterior's noise (one z ~ q(z|x) per image): about
        # pi/2 while q(z|x) is collapsed, even when its means alone still order the angles.
        sampled = means + stds * np.random.default_rng(0).standard_normal(means.shape)
        row = {
            "step": trainer.global_step,
            "beta": beta,
            "c_hat": self.trace[-1][2] if self.trace else float("nan"),
            **latent_angle_report(means, angles),
            "knn_sample_error": knn_angle_error(sampled, angles),
            "posterior_std": float(stds.mean()),
            **fit,
        }
        self.snapshots = [r for r in self.snapshots if r["step"] != row["step"]] + [row]
        _write_csv(self.dirpath / "snapshots.csv", self.snapshots)
        return means, angles

    @rank_zero_only
    def _write_metrics(self, trainer: pl.Trainer) -> None:
        """``pendulum_metrics.json``: the last snapshot's row (the end of training)."""
        report = dict(self.snapshots[-1])
        _atomic_write_json(self.dirpath / "pendulum_metrics.json", report)
        for lg in trainer.loggers:
            lg.log_metrics(
                {
                    f"{self.split}/{k}": v
                    for k, v in report.items()
                    if k in ("arcsin_ols_error", "polar_ols_error", "knn_angle_error")
                },
                step=trainer.global_step,
            )

    @rank_zero_only
    def _write_trace(self, trainer: pl.Trainer) -> None:
        if not self.trace:
            return
        steps, betas, c_hats = (np.asarray(col) for col in zip(*self.trace, strict=True))
        self._save(trainer, "beta_trace", plot_beta_trace(steps, betas, c_hats, self.kappa_sq))

    def _save(self, trainer: pl.Trainer, name: str, fig: Figure) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        fig.savefig(path, dpi=100)
        log_figure(trainer, f"figures/{name.split('_step')[0]}", fig, path)
        plt.close(fig)

    def state_dict(self) -> dict[str, Any]:
        return {"trace": [list(t) for t in self.trace], "snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trace = [tuple(t) for t in state_dict.get("trace", [])]  # type: ignore[misc]
        self.snapshots = list(state_dict.get("snapshots", []))


def log_figure(trainer: pl.Trainer, key: str, fig: Figure, path: Path) -> None:
    """Send a figure to every logger that takes images (TensorBoard, W&B); CSV has none."""
    for lg in trainer.loggers:
        kind = type(lg).__name__
        if kind == "TensorBoardLogger":
            lg.experiment.add_figure(key, fig, global_step=trainer.global_step, close=False)
        elif kind == "WandbLogger":
            lg.log_image(key=key, images=[str(path)], step=trainer.global_step)


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """All rows (same keys) as one CSV, written atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join(f"{r.get(k, '')}" for k in keys) for r in rows]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)
