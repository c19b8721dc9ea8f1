"""Run-keeping: RNG state and data position in checkpoints (exact resume), save on interrupt.

Together these make a resumed run equal an uninterrupted one, also from a checkpoint written in
the middle of an epoch (SIGTERM, Ctrl-C): ``RNGStateCallback`` restores the global RNGs (the
model's sampling noise) and ``ResumableLoader`` replays the interrupted epoch's order and skips
the batches already trained on.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler


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
        for cb in trainer.checkpoint_callbacks:  # this file is now the run's last checkpoint, so a
            if getattr(cb, "dirpath", None) and Path(cb.dirpath) == self.path.parent:  # resumed
                cb.last_model_path = str(self.path)  # ModelCheckpoint overwrites it (no last-v1)
        trainer.save_checkpoint(str(self.path))
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: checkpoint written to {self.path}. "
            f"Resume with ckpt_path={self.path}"
        )


class ResumableLoader(DataLoader):
    """A ``DataLoader`` that resumes mid-epoch exactly where a checkpoint left it.

    It shuffles with its own ``generator`` (not the global RNG) and keeps, in ``state_dict()``,
    the generator state at the start of the running epoch, the state now, and how many batches
    it has yielded. Lightning stores that in checkpoints and hands it back on resume (the
    ``state_dict``/``load_state_dict`` protocol of resumable loaders); the next ``iter()`` then
    replays the interrupted epoch's order and skips the batches already trained on (they are
    loaded and dropped: cheap for in-memory data). After a complete epoch it simply continues
    with the next one. Under DDP Lightning swaps in a ``DistributedSampler`` (its order depends
    on seed and epoch only); the skipping works the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch_start: torch.Tensor | None = None
        self._yielded = 0
        self._pending: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # A generator: nothing (no restore, no generator draw) happens before the first batch is
        # requested, so an iterator that Lightning creates and drops again changes nothing.
        skip, gen = 0, self.generator
        state, self._pending = self._pending, None
        if state is not None:
            mid_epoch = 0 < state["yielded"] < len(self)
            if gen is not None:
                gen.set_state(state["epoch_start"] if mid_epoch else state["now"])
            skip = state["yielded"] if mid_epoch else 0
        self._epoch_start = None if gen is None else gen.get_state()
        self._yielded = 0
        it = super().__iter__()
        for _ in range(skip):
            next(it)
            self._yielded += 1
        for batch in it:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        gen = self.generator
        return {
            "epoch_start": self._epoch_start,
            "now": None if gen is None else gen.get_state(),
            "yielded": self._yielded,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict


def resumable_train_loader(datamodule: pl.LightningDataModule, seed: int) -> None:
    """Make ``datamodule.train_dataloader()`` return a ``ResumableLoader`` (shuffle seeded by
    ``seed``). A loader it cannot rebuild (a custom sampler, an iterable dataset) is kept as is;
    Lightning then warns that a mid-epoch resume will not replay the same batches."""
    datamodule.train_dataloader = functools.partial(  # type: ignore[method-assign]
        _make_resumable, type(datamodule).train_dataloader, datamodule, seed
    )


def _make_resumable(make: Any, datamodule: pl.LightningDataModule, seed: int) -> Any:
    dl = make(datamodule)
    if type(dl) is not DataLoader or not isinstance(dl.sampler, (RandomSampler, SequentialSampler)):
        return dl
    shuffle = isinstance(dl.sampler, RandomSampler)
    generator = dl.generator
    if shuffle and generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    return ResumableLoader(
        dl.dataset,
        batch_size=dl.batch_size,
        shuffle=shuffle,
        drop_last=dl.drop_last,
        num_workers=dl.num_workers,
        collate_fn=dl.collate_fn,
        pin_memory=dl.pin_memory,
        timeout=dl.timeout,
        worker_init_fn=dl.worker_init_fn,
        persistent_workers=dl.persistent_workers,
        generator=generator,
    )
