"""``SplitDataModule``: the DataLoaders every DataModule here shares, over ``self.splits``; and the
argument checks and the random split by fractions that several of them use."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from vhp_lightning.io.config_values import positive_int


def check_batch_sizes(batch_size: int, eval_batch_size: int) -> None:
    """Raise ``ValueError`` unless both batch sizes are integers >= 1 (``positive_int``)."""
    positive_int("dataset.batch_size", batch_size)
    positive_int("dataset.eval_batch_size", eval_batch_size)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``ValueError`` unless both held-out fractions are >= 0 and leave some training data."""
    if min(val_fraction, test_fraction) < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"need 0 <= val_fraction, test_fraction and their sum < 1, got {val_fraction}, "
            f"{test_fraction}"
        )


def split_by_fractions(
    order: np.ndarray, val_fraction: float, test_fraction: float
) -> dict[str, np.ndarray]:
    """Cut the (shuffled) indices ``order: (n,)`` into ``{"val", "test", "train": indices}``: the
    first ``round(val_fraction * n)`` are val, the next ``round(test_fraction * n)`` test, the rest
    train."""
    n_val = round(val_fraction * len(order))
    n_test = round(test_fraction * len(order))
    return {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }


class SplitDataModule(pl.LightningDataModule):
    """Serves ``self.splits = {"train", "val", "test": Dataset}`` (set in ``setup``).

    Subclasses set ``batch_size``, ``eval_batch_size`` and ``num_workers``. The training loader
    shuffles and drops a last partial batch (unless the split is smaller than one batch); the
    evaluation loaders keep every sample in order. A loader asked for before ``setup`` (e.g.
    ``load(path).datamodule().test_dataloader()``) runs ``setup`` first.
    """

    splits: dict
    batch_size: int
    eval_batch_size: int
    num_workers: int

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in (getattr(self, "splits", None) or {}):
            self.setup("test" if split == "test" else "fit")
        splits = getattr(self, "splits", None) or {}
        if split not in splits:
            raise RuntimeError(
                f"{type(self).__name__}.setup() built no {split!r} split (it has: "
                f"{', '.join(splits) or 'none'}); its setup must fill self.splits['{split}']"
            )
        data = splits[split]
        return DataLoader(
            data,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(data) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
