"""Observation models p_theta(x|z): turn a decoder output into a log-likelihood and a mean.

Each likelihood takes the decoder output ``out: (..., D)`` and flattened data ``x: (..., D)`` and
returns ``log_prob: (...,)`` (summed over D) and ``mean: (..., D)``, the E[x|z] that enters the
constraint C of sec. 2.1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vhp_lightning.bounds import bernoulli_log_prob, gaussian_log_prob


class BernoulliLikelihood(nn.Module):
    """Bernoulli with logits = decoder output (MNIST family, Faces/Chairs; App. F)."""

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_prob(x, out)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class GaussianLikelihood(nn.Module):
    """Gaussian with mean = decoder output and one shared standard deviation sigma (pendulum, CMU).

    ``sigma=None`` learns log sigma as part of theta, bounded below by ``min_sigma``; a float
    fixes it. Either way beta = 1 is a true ELBO. The choice sets how strongly the
    reconstruction is weighted against the KL term (1 / (2 sigma^2) per squared pixel error): a
    learned sigma shrinks to the pixel error and weights it ~1 000-fold on the pendulum, which
    makes beta = 1 nearly an autoencoder. The pendulum learns sigma from ``init_sigma = 1``
    (decision 15): Adam moves log sigma by at most lr a step, so the weight grows as training goes.
    """

    def __init__(
        self, sigma: float | None = None, init_sigma: float = 0.1, min_sigma: float = 1e-3
    ) -> None:
        super().__init__()
        if sigma is not None and sigma <= 0:
            raise ValueError(f"likelihood.sigma must be > 0 or null (learned), got {sigma}")
        if not 0 < min_sigma <= init_sigma:
            raise ValueError(f"need 0 < min_sigma <= init_sigma, got {min_sigma}, {init_sigma}")
        self.learned = sigma is None
        start = math.log(init_sigma if sigma is None else sigma)
        self.log_sigma = nn.Parameter(torch.tensor(start), requires_grad=self.learned)
        self.min_log_sigma = math.log(min_sigma)

    def sigma(self) -> torch.Tensor:
        return self.log_sigma.clamp(min=self.min_log_sigma).exp()

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        logvar = 2.0 * self.log_sigma.clamp(min=self.min_log_sigma)
        return gaussian_log_prob(x, out, logvar.expand_as(out))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out
