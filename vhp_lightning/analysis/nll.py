"""The test negative log-likelihood of Table 2 (sec. 4.3), as a torchmetrics ``Metric``.

``MeanNLL`` keeps a sum, a sum of squares and a count, all reduced by summation across processes,
so under DDP every rank computes the mean over *all* images (each rank's shard weighted by its
size), the same number a single process gets; ``NLLStandardError`` is the same metric reporting
the standard error of that mean over the images (Table 2's +-). ``log_likelihood_batched``
bounds memory for any model's importance-sampled ``log_likelihood(x, n_samples, chunk_size)``.
Used by ``VHPModule.test_step`` (``test/nll``), ``vhp_lightning.evaluate`` and
``vhp_lightning.api``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric


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
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples (S) must be an integer >= 1, got {n_samples!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    samples_per_call = min(n_samples, chunk_size)
    images_per_call = max(1, chunk_size // samples_per_call)
    return torch.cat(
        [
            model.log_likelihood(xs, n_samples=n_samples, chunk_size=samples_per_call)
            for xs in x.split(images_per_call)
        ]
    )


__all__ = ["MeanNLL", "NLLStandardError", "log_likelihood_batched"]
