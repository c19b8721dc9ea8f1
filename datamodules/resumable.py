"""A training ``DataLoader`` that resumes mid-epoch exactly where a checkpoint left it.

``resumable_train_loader(datamodule, seed)`` makes a datamodule's ``train_dataloader()`` return a
``ResumableLoader``: with ``RNGStateCallback`` (``vhp_lightning.callbacks.run_state``) a run
resumed from a checkpoint written in the middle of an epoch (SIGTERM, Ctrl-C) trains on the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler


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
