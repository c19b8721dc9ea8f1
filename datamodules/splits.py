"""``SplitDataModule``: the DataLoaders every DataModule here shares, over ``self.splits``."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader


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
