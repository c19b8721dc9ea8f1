"""The test negative log-likelihood of Table 2 (sec. 4.3), as a torchmetrics ``Metric``.

``MeanNLL`` keeps a sum, a sum of squares and a count, all reduced by summation across processes,
so under DDP every rank computes the mean over *all* images (each rank's shard weighted by its
size), the same number a single process gets; ``NLLStandardError`` is the same metric reporting
the standard error of that mean over the images (Table 2's +-). ``log_likelihood_batched``
bounds memory for any model's importance-sampled ``log_likelihood(x, n_samples, chunk_size)``.
Used by ``VHPModule.test_step`` (``test/nll``), ``vhp_lightning.evaluate`` and
``vhp_lightning.api``.

Each image's estimate is also kept, as ``nll_per_image.csv`` (``PER_IMAGE_FILE``) beside the
run: one row ``index,log_px`` per scored image, ``index`` its position in the evaluated split,
``log_px`` the float64 estimate written with Python's shortest round-trip repr (read back
bit-exact), rows sorted by index. A CSV rather than an ``.npz``: a few tens of kB for 2 000
images, readable and diffable in a review of ``results/table2/``, like the curves beside it.
``loader_indices`` says which split indices a loader yields, so that a DDP shard records the true
ones; ``reports/table2.py`` pairs two runs' files image by image.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler
from torchmetrics import Metric

from vhp_lightning.io.config_values import positive_int
from vhp_lightning.io.files import atomic_open

PER_IMAGE_FILE = "nll_per_image.csv"
PER_IMAGE_COLUMNS = ("index", "log_px")


class MeanNLL(Metric):
    """Mean over images of -log p(x): ``update(log_px: (B,))``, ``compute() -> ()`` in nats.

    States are float64 sums, so 10 000 values of ~100 nats lose no precision.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False
    total: torch.Tensor  # states (add_state): -sum log p(x), sum log p(x)^2, images
    total_sq: torch.Tensor
    count: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "total_sq", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, log_px: torch.Tensor) -> None:
        if log_px.dim() != 1:
            shape = tuple(log_px.shape)
            raise ValueError(f"MeanNLL.update expects log p(x) of shape (B,), got {shape}")
        if not torch.isfinite(log_px).all():
            raise FloatingPointError(
                "non-finite log p(x) estimate; check the model (NaN weights?) or lower chunk_size"
            )
        values = log_px.detach().to(torch.float64)
        self.total -= values.sum()
        self.total_sq += values.square().sum()
        self.count += log_px.numel()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            raise RuntimeError("MeanNLL.compute() before any update: no images were evaluated")
        return self.total / self.count


class NLLStandardError(MeanNLL):
    """Standard error over images of ``MeanNLL``'s mean: ``sqrt(var / n)``, with the unbiased
    variance of -log p(x) over the n images (0 for a single image), in nats."""

    def compute(self) -> torch.Tensor:
        mean = super().compute()
        n = self.count.to(torch.float64)
        if self.count < 2:
            return torch.zeros((), dtype=torch.float64)
        variance = (self.total_sq - n * mean.square()).clamp(min=0) / (n - 1)
        return (variance / n).sqrt()


@torch.no_grad()
def log_likelihood_batched(
    model: Any, x: torch.Tensor, n_samples: int, chunk_size: int = 1000
) -> torch.Tensor:
    """Importance-sampled log p(x) (sec. 4.3), ``x: (B, *data_shape)`` -> ``(B,)``.

    Calls ``model.log_likelihood`` on sub-batches so that at most ``chunk_size`` decoder
    evaluations (images x samples) run at once: ``min(S, chunk_size)`` samples per call for
    ``max(1, chunk_size // S)`` images.
    """
    n_samples = positive_int("n_samples (S)", n_samples)
    chunk_size = positive_int("chunk_size", chunk_size)
    samples_per_call = min(n_samples, chunk_size)
    images_per_call = max(1, chunk_size // samples_per_call)
    return torch.cat(
        [
            model.log_likelihood(xs, n_samples=n_samples, chunk_size=samples_per_call)
            for xs in x.split(images_per_call)
        ]
    )


# --- per-image values ---------------------------------------------------------------------------
def loader_indices(loader: Any) -> list[torch.Tensor] | None:
    """The split indices of each batch ``loader`` yields, ``[(B_t,) int64 for batch t]``, or
    None when they cannot be known before iterating (a shuffled or custom sampler).

    A ``SequentialSampler`` yields 0, 1, 2, ...; Lightning's unshuffled ``DistributedSampler``
    under DDP yields rank r the positions r, r + W, r + 2W, ... of the split padded (with its
    first images) to a multiple of the W ranks: an index of -1 marks such a padding copy, an
    image another rank scores, so that each image is counted once. The loader's batches are
    the same each time it is iterated (no shuffling), so these are the indices of its batches.
    """
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        return None
    sampler = loader.sampler
    if type(sampler) is DistributedSampler:  # not a wrapper of a sampler of unknown order
        if sampler.shuffle:
            return None
        n = len(sampler.dataset)  # type: ignore[arg-type]
        rank, world = sampler.rank, sampler.num_replicas
    elif isinstance(sampler, SequentialSampler):
        n, rank, world = len(sampler), 0, 1
    else:
        return None
    batches, position = [], rank
    for batch in loader.batch_sampler:
        index = torch.as_tensor(list(batch), dtype=torch.int64)  # (B_t,)
        padding = position + world * torch.arange(len(index)) >= n
        batches.append(index.masked_fill(padding, -1))
        position += world * len(index)
    return batches


def write_per_image(path: str | os.PathLike, index: Any, log_px: Any) -> None:
    """Write ``nll_per_image.csv`` atomically: ``index: (N,)`` split indices (distinct, >= 0),
    ``log_px: (N,)`` the importance-sampled log p(x) of each image, as float64, sorted by
    index."""
    index = np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64)
    values = np.asarray(torch.as_tensor(log_px).detach().cpu(), dtype=np.float64)
    if index.ndim != 1 or index.shape != values.shape:
        raise ValueError(
            f"per-image values need index (N,) and log_px (N,), got {index.shape}, {values.shape}"
        )
    if len(np.unique(index)) != len(index) or (index < 0).any():
        raise ValueError(f"per-image indices must be distinct and >= 0 ({path})")
    if not np.isfinite(values).all():
        raise FloatingPointError(f"non-finite log p(x) among the per-image values ({path})")
    order = np.argsort(index, kind="stable")
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PER_IMAGE_COLUMNS)
        rows = zip(index[order].tolist(), values[order].tolist(), strict=True)
        writer.writerows((i, repr(v)) for i, v in rows)


def read_per_image(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(index: (N,) int64, log_px: (N,) float64)`` of a ``write_per_image`` file; a file with
    another header, a repeated index or a non-finite value is refused, naming it."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != PER_IMAGE_COLUMNS:
        raise ValueError(
            f"{path} is not a per-image NLL file: its header should be "
            f"{','.join(PER_IMAGE_COLUMNS)}, got {','.join(rows[0]) if rows else 'nothing'}"
        )
    try:
        index = np.array([int(r[0]) for r in rows[1:]], dtype=np.int64)
        values = np.array([float(r[1]) for r in rows[1:]], dtype=np.float64)
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: a row is not 'index,log_px' ({e})") from None
    if len(np.unique(index)) != len(index) or not all(map(math.isfinite, values)):
        raise ValueError(f"{path}: a repeated index or a non-finite log_px")
    return index, values


__all__ = [
    "PER_IMAGE_FILE",
    "MeanNLL",
    "NLLStandardError",
    "loader_indices",
    "log_likelihood_batched",
    "read_per_image",
    "write_per_image",
]
