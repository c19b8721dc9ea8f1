"""Batches as every DataModule here yields them: ``x`` alone or ``(x, label, ...)``; and the first
``n`` examples of a split's loader (the fixed points a figure or an evaluation looks at).

The data tensor ``x`` is ``(B, *data_shape)``; the label, when a batch carries one, is ``(B,)``
(a digit, a class, a motion or the pendulum's angle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch


def batch_inputs(batch: Any) -> Any:
    """The data of a batch: ``batch`` itself, or the first item of a ``(x, label, ...)`` list or
    tuple (``(B, *data_shape)``)."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def batch_labels(batch: Any) -> Any | None:
    """The second item of a ``(x, label, ...)`` batch (``(B,)``); None when it carries none."""
    return batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None


def first_batches(loader: Iterable[Any], n: int | None) -> Iterator[tuple[Any, Any | None]]:
    """``(x, labels)`` of each batch of ``loader`` (``batch_inputs``, ``batch_labels``), the last
    one cut so that together they hold its first ``n`` examples (``None``: all of them); no
    batch is fetched after the ``n``-th example."""
    left = math.inf if n is None else n
    if left <= 0:
        return
    for batch in loader:
        x, y = batch_inputs(batch), batch_labels(batch)
        take = int(min(len(x), left))
        yield x[:take], None if y is None else y[:take]
        left -= take
        if left <= 0:
            return


def first_examples(
    loader: Iterable[Any], n: int | None, split: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``n`` examples of the ``split`` whose ``loader`` is given (``None``: all), in its
    order: ``x: (N, *data_shape)`` and ``labels: (N,)`` (None when a batch carries none).

    Iterating a loader draws a seed from torch's global RNG (and shuffles with it); this happens
    in a forked RNG, so the caller's stream (a training run's) is left as it was.

    Raises:
        RuntimeError: the loader yields no example.
    """
    xs: list[torch.Tensor] = []
    ys: list[Any | None] = []
    with torch.random.fork_rng(devices=[]):
        for x, y in first_batches(loader, n):
            xs.append(x)
            ys.append(y)
    if not xs or not sum(len(x) for x in xs):
        raise RuntimeError(f"the {split} split is empty; check the dataset config")
    if any(y is None for y in ys):
        return torch.cat(xs), None
    return torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys])
