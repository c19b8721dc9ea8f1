"""Reconstructions and prior samples as image grids during training (rank zero).

Every ``every_n_steps`` optimiser steps (and once at the end of ``fit``), for a fixed set of
``n_images`` data points of one split: ``reconstructions_step<k>.png`` (rows of data and their
reconstructions E[x|z = mean of q(z|x)] alternating) and ``samples_step<k>.png`` (E[x|z] for
z ~ p(z), the model's prior, eq. 13 for the VHP). Saved under ``dirpath`` and sent to
TensorBoard/W&B via ``vhp_lightning.callbacks.figures.log_image``. Needs image data
(``datamodule.data_shape = [C, H, W]``); other data are skipped, with one warning when
``require_images`` (``callbacks=image_grids``), silently in the default callbacks, which draw
the grids of image datasets at the end of every run. The training RNG stream is left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from vhp_lightning.analysis.eval_mode import evaluating
from vhp_lightning.analysis.figures import plot_image_grid, save_figure
from vhp_lightning.callbacks.figures import log_image
from vhp_lightning.datamodules.batches import first_examples
from vhp_lightning.io.config_values import non_negative_int, positive_int


class ImageGrids(Callback):
    """Image grids of reconstructions and prior samples.

    Args:
        dirpath: output folder (``<run dir>/images`` in the config).
        every_n_steps: draw every this many steps; 0 = only at the end of fit.
        n_images: data points reconstructed and prior samples drawn (each grid).
        nrow: images per grid row.
        split: ``"val"`` or ``"test"``, where the fixed data points come from.
        at_fit_end: also draw once when fit ends (not under ``fast_dev_run``).
        require_images: warn (once) when the data are not images; ``False`` skips them silently.

    The paths of the last grids drawn are in ``figure_paths`` (the closing summary prints them).
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 1000,
        n_images: int = 32,
        nrow: int = 8,
        split: str = "val",
        at_fit_end: bool = True,
        require_images: bool = True,
    ) -> None:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.dirpath, self.split = Path(dirpath), split
        self.every_n_steps = non_negative_int(
            "every_n_steps", every_n_steps, means="0 = only at the end of fit"
        )
        self.n_images, self.nrow = positive_int("n_images", n_images), positive_int("nrow", nrow)
        self.at_fit_end = bool(at_fit_end)
        self.require_images = bool(require_images)
        self.figure_paths: list[Path] = []
        self._fixed: torch.Tensor | None = None
        self._skip = False

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.draw(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_fit_end and not trainer.fast_dev_run:
            self.draw(trainer, pl_module)

    @rank_zero_only
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write (and log) both grids for the current step."""
        if self._skip:
            return
        shape = tuple(getattr(trainer.datamodule, "data_shape", ()) or ())
        if len(shape) != 3:
            self._skip = True
            if not self.require_images:
                return
            rank_zero_warn(
                f"ImageGrids needs image data (data_shape [C, H, W]), got {list(shape)}; "
                "skipped. Drop callbacks=image_grids for this dataset."
            )
            return
        model = pl_module.model
        with evaluating(pl_module):
            x = self._data(trainer).to(pl_module.device)
            recon = model.decode(model.encode(x)[0]).view(-1, *shape)
            samples = model.sample(self.n_images).view(-1, *shape)
        step = trainer.global_step
        rows = _interleave_rows(x.cpu(), recon.float().cpu(), self.nrow)
        self.figure_paths = [
            self._save(trainer, "reconstructions", rows, f"data / reconstruction, step {step}"),
            self._save(trainer, "samples", samples.float().cpu(), f"prior samples, step {step}"),
        ]

    def _data(self, trainer: pl.Trainer) -> torch.Tensor:
        """The first ``n_images`` data points of the split (kept for later calls)."""
        if self._fixed is None:
            dm = trainer.datamodule
            dm.setup("test" if self.split == "test" else "fit")
            loader = getattr(dm, f"{self.split}_dataloader")()
            self._fixed = first_examples(loader, self.n_images, self.split)[0].float()
        return self._fixed

    def _save(self, trainer: pl.Trainer, name: str, images: torch.Tensor, title: str) -> Path:
        """Write ``<dirpath>/<name>_step<k>.png`` and send it to the image loggers."""
        fig = plot_image_grid(images, self.nrow, title)
        path = save_figure(fig, self.dirpath / f"{name}_step{trainer.global_step}.png")
        log_image(trainer, f"images/{name}", path)
        return path


def _interleave_rows(x: torch.Tensor, recon: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of ``nrow`` data images followed by the row of their reconstructions."""
    out = []
    for start in range(0, len(x), nrow):
        out += [x[start : start + nrow], recon[start : start + nrow]]
        pad = nrow - len(out[-1])
        if pad:  # keep the reconstructions under their data in a short last row
            out[-2] = torch.cat([out[-2], torch.zeros(pad, *x.shape[1:])])
            out[-1] = torch.cat([out[-1], torch.zeros(pad, *x.shape[1:])])
    return torch.cat(out)
