"""Figures during training: every run's end-of-run pictures and the pendulum's Fig. 2.

``RunFigures`` (in the default callbacks) draws, once when ``fit`` ends, what any dataset shows
without knowing it: the posterior means coloured by the batch's label or angle beside prior
samples on shared axes (Fig. 2, 16; PCA when the latent has more than 2 dims) and the beta / C_t
trace with REWO's phase switch marked. ``PendulumFigures`` adds the pendulum's Fig. 2 snapshots
every ``every_n_steps`` steps (Table 1's numbers: ``callbacks.table1_metrics``). Rank zero only,
off the hot path (one forward pass over at most ``max_points`` points of the evaluation split);
the training RNG stream is left untouched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from vhp_lightning.analysis.eval_mode import evaluating
from vhp_lightning.analysis.figures import plot_beta_trace, plot_posterior_and_prior, save_figure
from vhp_lightning.callbacks.base import BetaScheme, find_scheme
from vhp_lightning.datamodules.batches import first_batches
from vhp_lightning.io.config_values import non_negative_int, positive_int, positive_int_or_none


class RunFigures(Callback):
    """The end-of-run pictures of any dataset, in ``dirpath`` and in TensorBoard/W&B.

    When ``fit`` ends (not under ``fast_dev_run``) it writes ``latents_step<k>.png``
    (``plot_posterior_and_prior``: q(z|x) means coloured by the batches' second item, an angle or
    a class label, when they carry one; then their posterior std; then prior samples over the
    means, all on one window) and ``beta_trace.png`` (beta and C_t against the step, kappa^2
    dashed, REWO's switch to the main phase dotted). The paths written are in ``figure_paths``
    (the closing summary prints them). Image grids are
    ``vhp_lightning.callbacks.image_grids.ImageGrids``.

    Args:
        dirpath: output folder (``<run dir>/figures`` in the config).
        n_prior_samples: samples z ~ p(z) in the prior panel.
        max_points: encode at most this many points of ``split`` (``None``: all).
        split: ``"val"`` or ``"test"``.
    """

    def __init__(
        self,
        dirpath: str,
        n_prior_samples: int = 2_000,
        max_points: int | None = 5_000,
        split: str = "test",
    ) -> None:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.dirpath = Path(dirpath)
        self.n_prior_samples = positive_int("n_prior_samples", n_prior_samples)
        self.max_points = positive_int_or_none("max_points", max_points, "all")
        self.split = split
        self.trace: list[tuple[int, float, float]] = []  # (step, beta, C_t) of every step
        self.kappa_sq: float | None = None
        self.figure_paths: list[Path] = []  # written at the end of the last fit
        self._scheme: BetaScheme | None = None

    # --- Lightning hooks ----------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scheme = find_scheme(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Record (step, beta of this step, C_t so far): a few attribute reads per step."""
        scheme = self._scheme
        if scheme is None:
            beta, c_hat = float(getattr(pl_module, "beta", 1.0)), math.nan
        else:
            beta = scheme.beta
            c_hat = math.nan if scheme.c_hat is None else scheme.c_hat
            self.kappa_sq = scheme.kappa_sq
        self.trace.append((trainer.global_step, beta, c_hat))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        self.figure_paths = []
        self.draw(trainer, pl_module)

    @rank_zero_only
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The latent panels (when the model has an encoder and a prior) and the beta trace."""
        model = getattr(pl_module, "model", None)
        if hasattr(model, "encode") and hasattr(model, "sample_prior"):
            means, stds, labels, prior = self._encode(trainer, pl_module)
            self._draw_latents(trainer, pl_module, means, stds, labels, prior)
        self._write_trace(trainer)

    # --- pieces -------------------------------------------------------------------------------
    def _encode(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        return encode_split(trainer, pl_module, self.split, self.max_points, self.n_prior_samples)

    def _draw_latents(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        means: np.ndarray,
        stds: np.ndarray,
        labels: np.ndarray | None,
        prior: np.ndarray,
    ) -> None:
        beta = float(getattr(pl_module, "beta", 1.0))
        title = f"step {trainer.global_step}, beta = {beta:.3g}"
        colour = labels if labels is not None else np.zeros(len(means), dtype=np.int64)
        fig = plot_posterior_and_prior(means, stds, colour, prior, title)
        self._save(trainer, f"latents_step{trainer.global_step}", fig)

    @rank_zero_only
    def _write_trace(self, trainer: pl.Trainer) -> None:
        if not self.trace:
            return
        steps, betas, c_hats = (np.asarray(col) for col in zip(*self.trace, strict=True))
        scheme = self._scheme
        switch = None if scheme is None else scheme.switch_step
        title = ""
        if switch is not None:
            title = f"{type(scheme).__name__}: initial phase until step {switch}, then main phase"
        elif self.kappa_sq is not None and scheme is not None and not scheme.train_prior:
            title = f"{type(scheme).__name__}: initial phase throughout (C_t never < kappa^2)"
        fig = plot_beta_trace(steps, betas, c_hats, self.kappa_sq, switch, title)
        self._save(trainer, "beta_trace", fig)

    def _save(self, trainer: pl.Trainer, name: str, fig: Figure) -> None:
        """Write ``<dirpath>/<name>.png`` and send it to the image loggers."""
        path = save_figure(fig, self.dirpath / f"{name}.png")
        log_image(trainer, f"figures/{name.split('_step')[0]}", path)
        if path not in self.figure_paths:
            self.figure_paths.append(path)

    def state_dict(self) -> dict[str, Any]:
        return {"trace": [list(t) for t in self.trace]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trace = [tuple(t) for t in checked_rows(state_dict, "trace", tuple)]


class PendulumFigures(RunFigures):
    """Fig. 2 snapshots every ``every_n_steps`` steps and at the end of training.

    Writes ``<dirpath>/latents_step<k>.png`` (posterior means coloured by angle, their std, prior
    samples) with the arrays behind it (``latents_step<k>.npz``: ``means``, ``stds``,
    ``angles``, ``prior``) and ``beta_trace.png``, and logs the figures to TensorBoard/W&B when
    those loggers are active. Needs batches ``(x, angle)``; encodes the whole split. Table 1's
    numbers at the same steps are ``callbacks.table1_metrics.PendulumMetrics``.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 5_000,
        n_prior_samples: int = 2_000,
        split: str = "test",
    ) -> None:
        super().__init__(dirpath, n_prior_samples=n_prior_samples, max_points=None, split=split)
        self.every_n_steps = non_negative_int(
            "every_n_steps", every_n_steps, means="0 = only at the end"
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self._snapshot(trainer, pl_module, f"latents_step{step}")

    @rank_zero_only
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The last snapshot and the beta trace."""
        self._snapshot(trainer, pl_module, f"latents_step{trainer.global_step}")
        self._write_trace(trainer)

    @rank_zero_only
    def _snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> None:
        """Draw Fig. 2's panels and keep their arrays (``<name>.npz``)."""
        means, stds, angles, prior = self._encode(trainer, pl_module)
        if angles is None or not np.issubdtype(angles.dtype, np.floating):
            raise ValueError(
                "PendulumFigures needs batches (x, angle) with a float angle (the pendulum's); "
                "for other data use the default callbacks "
                "(vhp_lightning.callbacks.figures.RunFigures)."
            )
        beta = float(getattr(pl_module, "beta", 1.0))
        title = f"step {trainer.global_step}, beta = {beta:.3g}"
        self._save(trainer, name, plot_posterior_and_prior(means, stds, angles, prior, title))
        np.savez_compressed(
            self.dirpath / f"{name}.npz", means=means, stds=stds, angles=angles, prior=prior
        )


def encode_split(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    split: str,
    max_points: int | None,
    n_prior_samples: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """q(z|x) means and stds ``(N, d)`` of the first ``max_points`` points of the datamodule's
    ``split`` (``None``: all), the batches' second items ``(N,)`` (``None`` if they carry none)
    and ``n_prior_samples`` draws z ~ p(z) ``(M, d)``; in eval mode, the RNG left untouched."""
    dm = trainer.datamodule
    dm.setup("test")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    means, stds, labels = [], [], []
    with evaluating(pl_module):
        for x, y in first_batches(loader, max_points):
            mean, logvar = pl_module.model.encode(x.to(pl_module.device))
            means.append(mean.float().cpu())
            stds.append((0.5 * logvar).exp().float().cpu())
            if y is not None:
                labels.append(torch.as_tensor(y).reshape(len(x), -1)[:, 0])
        prior = pl_module.model.sample_prior(n_prior_samples).float().cpu()
    return (
        torch.cat(means).numpy(),
        torch.cat(stds).numpy(),
        torch.cat(labels).numpy() if labels else None,
        prior.numpy(),
    )


def checked_rows(state: Any, key: str, kind: type) -> list[Any]:
    """``state[key]`` of a checkpoint: a list of rows (tuples, or dicts with string keys) of plain
    numbers or empty values; anything else is refused with ``CheckpointError``."""
    from vhp_lightning.io.checkpoint import CheckpointError
    from vhp_lightning.io.trusted_state import FIX

    rows: Any = state.get(key, []) if isinstance(state, dict) else None
    ok = isinstance(rows, list)
    for row in rows if ok else []:
        values = row.values() if isinstance(row, dict) else row
        ok = ok and isinstance(row, (list, tuple) if kind is tuple else dict)
        ok = ok and (kind is tuple or all(isinstance(k, str) for k in row))
        ok = ok and all(v is None or isinstance(v, (int, float)) for v in values)
    if not ok:
        raise CheckpointError(f"the figures state[{key!r}] must be a list of number rows. {FIX}")
    return list(rows)


def log_image(trainer: pl.Trainer, key: str, path: Path) -> None:
    """Send a saved PNG to every logger that takes images (TensorBoard, W&B; a user's subclass
    counts) at the trainer's step; CSV has none."""
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            image = matplotlib.image.imread(path)[..., :3]  # (H, W, RGB) in [0, 1]
            lg.experiment.add_image(key, image, trainer.global_step, dataformats="HWC")
        elif isinstance(lg, WandbLogger):
            lg.log_image(key=key, images=[str(path)], step=trainer.global_step)
