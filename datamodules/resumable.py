"""The training loader that resumes mid-epoch where a checkpoint left it: torchdata's
``StatefulDataLoader``.

``resumable_train_loader(datamodule, seed)`` makes a datamodule's ``train_dataloader()`` return a
``StatefulDataLoader``. Lightning stores the loader's ``state_dict()`` in each checkpoint and
hands it back on resume (its ``state_dict``/``load_state_dict`` protocol for stateful loaders);
the loader then replays the interrupted epoch's order from its saved sampler state and skips the
batches already trained on. With ``RNGStateCallback`` (``vhp_lightning.callbacks.run_state``) a
run resumed from a checkpoint written in the middle of an epoch (SIGTERM, Ctrl-C) or at its end
trains on the same batches as an uninterrupted one (``tests/test_resume.py``; it needs
torchdata >= 0.11: with 0.10 a resume from an end-of-epoch checkpoint takes other batches).

Two choices make that exact:

- The shuffling sampler has a generator of its own, seeded from the run's ``seed`` (or the one
  the datamodule's loader was given). torchdata saves and restores the sampler's generator, not
  the loader's ``generator=`` (from which every epoch also draws a worker base seed), so a
  generator shared by both would come back one draw short and the epoch after the resumed one
  would be shuffled differently. The loader has no generator: its worker base seed comes from
  torch's global RNG, which ``RNGStateCallback`` restores.
- Under a distributed strategy the sampler is torchdata's ``StatefulDistributedSampler``, a
  ``DistributedSampler`` with the arguments Lightning would give its own (the trainer's replicas
  and rank, the run's seed): the same order, drawn at the first batch, after Lightning has set the
  epoch, so a resumed run replays the interrupted epoch's order. (Lightning would otherwise wrap
  the stateful random sampler in a ``DistributedSamplerWrapper`` whose order is not restored.)
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler as StatefulRandomSampler
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler


def resumable_train_loader(datamodule: pl.LightningDataModule, seed: int) -> None:
    """Make ``datamodule.train_dataloader()`` return a ``StatefulDataLoader`` (shuffle seeded by
    ``seed``). A loader it cannot rebuild (a custom sampler, an iterable dataset) is kept as is;
    Lightning then warns that a mid-epoch resume will not replay the same batches."""
    datamodule.train_dataloader = functools.partial(
        _make_resumable, type(datamodule).train_dataloader, datamodule, seed
    )


def _make_resumable(make: Any, datamodule: pl.LightningDataModule, seed: int) -> Any:
    dl = make(datamodule)
    if type(dl) is not DataLoader or not isinstance(dl.sampler, (RandomSampler, SequentialSampler)):
        return dl
    shuffle = isinstance(dl.sampler, RandomSampler)
    trainer = getattr(datamodule, "trainer", None)
    distributed = None if trainer is None else trainer.distributed_sampler_kwargs
    sampler: Sampler[int] = dl.sampler
    if distributed is not None:
        sampler = StatefulDistributedSampler(dl.dataset, shuffle=shuffle, seed=seed, **distributed)
    elif shuffle:
        generator = dl.generator or torch.Generator().manual_seed(int(seed))
        sampler = StatefulRandomSampler(dl.dataset, generator=generator)
    with warnings.catch_warnings():  # torchdata 0.11 calls torch's deprecated set_vital
        warnings.filterwarnings("ignore", message=".*set_vital.*", category=UserWarning)
        return CheckedStatefulDataLoader(
            dl.dataset,
            batch_size=dl.batch_size,
            sampler=sampler,
            drop_last=dl.drop_last,
            num_workers=dl.num_workers,
            collate_fn=dl.collate_fn,
            pin_memory=dl.pin_memory,
            timeout=dl.timeout,
            worker_init_fn=dl.worker_init_fn,
            persistent_workers=dl.persistent_workers,
        )


class CheckedStatefulDataLoader(StatefulDataLoader):
    """``StatefulDataLoader`` whose ``load_state_dict`` first checks a stored state against the
    one this loader produces itself: the same keys, types, tensor dtypes and shapes (the
    sampler's generator state), counts >= 0 and no more batches or samples than an epoch has.
    A checkpoint's loader state that fails is refused with ``CheckpointError`` instead of
    torchdata's raw errors, and a state it cannot replay is never half-applied."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from vhp_lightning.io.checkpoint import CheckpointError
        from vhp_lightning.io.trusted_state import FIX, UntrustedStateError, check_like

        try:
            check_like(state_dict, self.state_dict(), "the train loader's state")
            limit = max(len(self.dataset), len(self))
            for key, value in _counts(state_dict):
                if value > limit:
                    raise UntrustedStateError(
                        f"the train loader's state {key} = {value} exceeds one epoch ({limit})"
                    )
            super().load_state_dict(state_dict)
        except UntrustedStateError as err:
            raise CheckpointError(f"{err}. {FIX}") from None
        except (RuntimeError, ValueError, TypeError, KeyError, AssertionError) as err:
            raise CheckpointError(
                f"the checkpoint's train-loader state cannot be restored "
                f"({type(err).__name__}: {err}). {FIX}"
            ) from None


def _counts(node: Any, where: str = "") -> list[tuple[str, int]]:
    """Every ``(path, int)`` leaf of a nested state (bools excluded)."""
    if isinstance(node, dict):
        return [c for k, v in node.items() for c in _counts(v, f"{where}.{k}" if where else k)]
    if isinstance(node, (list, tuple)):
        return [c for i, v in enumerate(node) for c in _counts(v, f"{where}[{i}]")]
    return [(where, node)] if isinstance(node, int) and not isinstance(node, bool) else []
