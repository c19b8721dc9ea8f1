"""The VampPrior (Tomczak & Welling, 2018), the mixture-prior baseline of sec. 4.2-4.3.

p_lambda(z) = (1/M) sum_m q_phi(z|u_m): a uniform mixture of the approximate posterior at M
learned pseudo-inputs u_m. The pseudo-inputs are this model's prior parameters; the encoder is
shared between q_phi(z|x) and the prior, so it stays in the theta/phi group (and keeps moving the
prior's components even while REWO's initial phase freezes the pseudo-inputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vhp_lightning.bounds import LOG_2PI, gaussian_log_prob, reparameterize
from vhp_lightning.io.config_values import positive_int
from vhp_lightning.models.vae import VAE


def mixture_log_prob(
    z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor, max_elements: int = 2**24
) -> torch.Tensor:
    """log (1/M) sum_m N(z; means_m, diag(exp(logvars_m))), ``z: (N, D)``, ``means, logvars:
    (M, D)`` -> ``(N,)``.

    Evaluated ``max_elements // (M * D)`` rows of ``z`` at a time, so the ``(rows, M, D)``
    intermediate stays bounded (S * B samples against M = 500 components would not fit at once).
    """
    rows = max(1, max_elements // max(1, means.numel()))
    out = []
    for chunk in z.split(rows):
        log_n = gaussian_log_prob(chunk.unsqueeze(1), means, logvars)  # (rows, M)
        out.append(torch.logsumexp(log_n, dim=1))
    return torch.cat(out) - math.log(means.shape[0])


def mixture_log_prob_expanded(
    z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor, max_elements: int = 2**24
) -> torch.Tensor:
    """``mixture_log_prob`` evaluated through matrix products, for evaluation without gradients.

    The squared distance of every row of ``z: (N, D)`` to every component of ``means, logvars:
    (M, D)`` is expanded, sum_d (z_d - mu_md)^2 / s_md = z^2 . (1/s_m) - 2 z . (mu_m / s_m)
    + sum_d mu_md^2 / s_md with s = exp(logvars), i.e. two ``(N, D) x (D, M)`` products instead of
    the elementwise ``(N, M, D)`` tensor. In float64, so the cancellation between the three
    terms stays far below float32's resolution; the result is cast back to ``z``'s dtype. Same
    shapes and value as ``mixture_log_prob`` (to ~1e-6 relative, tests/test_models.py), and
    an order of magnitude faster on one CPU thread at (20 000, 500, 32) (``make bench``:
    bench/RESULTS.md, *VampPrior mixture density*).
    """
    prec = torch.exp(-logvars.double())  # (M, D)
    mu = means.double()
    lin = (mu * prec).T  # (D, M)
    const = (mu.pow(2) * prec + logvars.double()).sum(1) + means.shape[1] * LOG_2PI  # (M,)
    rows = max(1, max_elements // max(1, means.numel()))
    out = []
    for chunk in z.double().split(rows):
        quad = chunk.pow(2) @ prec.T - 2.0 * (chunk @ lin)  # (rows, M)
        out.append(torch.logsumexp(-0.5 * (quad + const), dim=1))
    return (torch.cat(out) - math.log(means.shape[0])).to(z.dtype)


class VampPrior(VAE):
    """One stochastic layer with the VampPrior; single-sample ELBO, KL estimated by
    log q_phi(z|x) - log p_lambda(z).

    The pseudo-inputs are ``hardtanh(U, data_min, data_max)`` of a free parameter U of shape
    ``(n_pseudo, *data_shape)`` initialised N(``pseudo_init_mean``, ``pseudo_init_std``^2) —
    Tomczak & Welling's ``Linear(eye(M)) + Hardtanh(0, 1)`` written directly (the linear layer on
    an identity input is U itself), with their MNIST initialisation (mean 0.05, std 0.01). As in
    their code the clamp has zero gradient outside [data_min, data_max].

    Args:
        encoder, decoder, likelihood: as for ``VAE``; the encoder also embeds the pseudo-inputs.
        data_shape: shape of one example (the encoder's input), e.g. ``[1, 28, 28]``.
        n_pseudo: M, the number of pseudo-inputs (500 as in the VampPrior paper).
        pseudo_init_mean, pseudo_init_std: initialisation of U.
        data_min, data_max: range of the pseudo-inputs (the range of the data).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        data_shape: Sequence[int],
        n_pseudo: int = 500,
        pseudo_init_mean: float = 0.05,
        pseudo_init_std: float = 0.01,
        data_min: float = 0.0,
        data_max: float = 1.0,
    ) -> None:
        super().__init__(encoder, decoder, likelihood)
        n_pseudo = positive_int("model.n_pseudo (M)", n_pseudo)
        if not data_min < data_max:
            raise ValueError(f"need data_min < data_max, got {data_min}, {data_max}")
        shape = (n_pseudo, *(int(d) for d in data_shape))
        init = pseudo_init_mean + pseudo_init_std * torch.randn(shape)
        self.pseudo_raw = nn.Parameter(init)
        self.data_min, self.data_max = float(data_min), float(data_max)
        self._components: tuple[torch.Tensor, torch.Tensor] | None = None  # see log_likelihood

    def prior_parameters(self) -> Iterator[nn.Parameter]:
        """The pseudo-inputs (their free parameter U)."""
        yield self.pseudo_raw

    def pseudo_inputs(self) -> torch.Tensor:
        """u_m, ``(n_pseudo, *data_shape)``, in [data_min, data_max]."""
        return F.hardtanh(self.pseudo_raw, self.data_min, self.data_max)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p_lambda(z) = log (1/M) sum_m q_phi(z|u_m), ``z: (N, latent_dim)`` -> ``(N,)``.

        Inside ``log_likelihood`` (no gradients, components encoded once) through
        ``mixture_log_prob_expanded``; in training and validation the elementwise form.
        """
        if self._components is not None:
            return mixture_log_prob_expanded(z, *self._components)
        return mixture_log_prob(z, *self.encode(self.pseudo_inputs()))

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, n_samples: int = 5000, chunk_size: int = 500
    ) -> torch.Tensor:
        """``LatentVariableModel.log_likelihood`` with the M pseudo-inputs encoded once for all
        its chunks (the same components, not re-encoded per chunk of samples)."""
        self._components = self.encode(self.pseudo_inputs())
        try:
            return super().log_likelihood(x, n_samples, chunk_size)
        finally:
            self._components = None

    def kl_term(self, z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Single-sample estimate log q_phi(z|x) - log p_lambda(z), ``(B,)``."""
        return gaussian_log_prob(z, mean, logvar) - self.log_prior(z)

    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ p_lambda(z): a uniform pseudo-input m, then z ~ q_phi(z|u_m): ``(n, latent_dim)``."""
        u = self.pseudo_inputs()
        idx = torch.randint(u.shape[0], (n,), device=u.device)
        return reparameterize(*self.encode(u[idx]))
