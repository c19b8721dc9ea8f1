"""Batches as the DataModules yield them (``vhp_lightning.datamodules.batches``): the data of a
batch, and the first ``n`` examples of a loader."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vhp_lightning.datamodules.batches import (
    batch_inputs,
    batch_labels,
    first_batches,
    first_examples,
)


def test_batch_inputs_and_labels() -> None:
    x, y = torch.zeros(4, 3), torch.arange(4)
    assert batch_inputs(x) is x and batch_labels(x) is None
    assert batch_inputs((x, y)) is x and batch_labels((x, y)) is y
    assert batch_inputs([x, y]) is x and batch_labels([x, y]) is y
    assert batch_inputs((x,)) is x and batch_labels((x,)) is None


def _loader(n: int, batch_size: int, labelled: bool = True) -> DataLoader:
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2)  # (n, 2): row i holds i
    data = TensorDataset(x, torch.arange(n)) if labelled else TensorDataset(x)
    return DataLoader(data, batch_size=batch_size)


def test_first_examples_cut_the_last_batch_and_fetch_no_more() -> None:
    fetched = []

    def counting():
        for batch in _loader(10, 3):
            fetched.append(len(batch[0]))
            yield batch

    x, labels = first_examples(counting(), 7, "val")
    assert x.shape == (7, 2) and x[:, 0].tolist() == list(range(7))
    assert labels is not None and labels.tolist() == list(range(7))
    assert fetched == [3, 3, 3]  # the batch with the 7th example, none after it
    x, labels = first_examples(_loader(10, 3), None, "val")
    assert len(x) == 10 and labels is not None and len(labels) == 10


def test_first_examples_without_labels_and_of_an_empty_split() -> None:
    x, labels = first_examples(_loader(5, 2, labelled=False), 3, "test")
    assert x.shape == (3, 2) and labels is None
    assert [len(x) for x, _ in first_batches(_loader(5, 2), 3)] == [2, 1]
    with pytest.raises(RuntimeError, match="the test split is empty; check the dataset config"):
        first_examples([], 3, "test")


def test_first_examples_leave_the_callers_random_stream_as_it_was() -> None:
    shuffled = DataLoader(TensorDataset(torch.randn(20, 2)), batch_size=4, shuffle=True)
    torch.manual_seed(0)
    first_examples(shuffled, 8, "train")
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after)
