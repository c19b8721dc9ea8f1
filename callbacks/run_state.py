"""Run-keeping callbacks: RNG state in checkpoints (bitwise resume), a checkpoint on interrupt."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException


class RNGStateCallback(Callback):
    """Saves the torch/CUDA/NumPy/Python RNG states in checkpoints and restores them on resume.

    Restoring happens in ``on_train_start`` (after Lightning has restored everything else), so a
    run resumed from a checkpoint draws the same noise and the same shuffles as an uninterrupted
    run. All values are tensors or plain Python types, so the checkpoint loads with
    ``weights_only=True``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class SaveOnInterrupt(Callback):
    """Writes ``<dirpath>/last.ckpt`` when training is stopped by Ctrl-C or SIGTERM.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary and Ctrl-C into
    a ``KeyboardInterrupt``; both reach ``on_exception``. Other errors (a NaN loss above all) do
    not save: the last checkpoint on disk stays the last good state.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if trainer.state.fn != "fit":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(self.path))
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: checkpoint written to {self.path}. "
            f"Resume with ckpt_path={self.path}"
        )
