"""The standard VAE (eq. 2): one stochastic layer x <- z with the prior p(z) = N(0, I).

``VAE`` also holds what every one-layer model shares (``IWAE`` and ``VampPrior`` subclass it):
the importance weights ``log_weights``, which only ask the subclass for ``log_prior(z)``; the
encoder/decoder plumbing and the importance-sampled ``log_likelihood`` over those weights are
``models.base.LatentVariableModel``'s.
"""

from __future__ import annotations

import torch

from vhp_lightning.bounds import (
    gaussian_kl_std_normal,
    gaussian_log_prob,
    reparameterize,
    squared_error_per_pixel,
    std_normal_log_prob,
)
from vhp_lightning.models.base import LatentVariableModel


class VAE(LatentVariableModel):
    """x <- z, p(z) = N(0, I), amortised diagonal-Gaussian q_phi(z|x).

    Args:
        encoder: q_phi(z|x), maps ``x: (B, *data_shape)`` to ``(mean, logvar): (B, latent_dim)``.
        decoder: maps ``z: (B, latent_dim)`` to the likelihood's parameters ``(B, D)`` or
            ``(B, *data_shape)``.
        likelihood: p_theta(x|z) head (``nets.likelihoods``).
    """

    # --- the prior ----------------------------------------------------------------------------
    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = log N(z; 0, I), ``z: (N, latent_dim)`` -> ``(N,)``."""
        return std_normal_log_prob(z)

    def kl_term(self, z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q_phi(z|x) || p(z)) in closed form, ``(B,)`` (``z``, one sample, is not needed)."""
        return gaussian_kl_std_normal(mean, logvar)

    def log_weights(
        self, x_flat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, n: int
    ) -> dict[str, torch.Tensor]:
        """The parts of n importance weights p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q_phi(z|x).

        ``x_flat: (B, D)``, ``mean, logvar: (B, latent_dim)`` -> ``log_px``, ``log_p``
        (``log_prior``), ``log_q``, each ``(n, B)``, and the decoder output ``out: (n, B, D)``.
        """
        z = reparameterize(mean, logvar, n)  # (n, B, Dz)
        z_flat = z.flatten(0, 1)
        out = self.decoder_output(z_flat).view(n, *x_flat.shape)
        return {
            "log_px": self.likelihood.log_prob(x_flat, out),
            "log_p": self.log_prior(z_flat).view(n, -1),
            "log_q": gaussian_log_prob(z, mean, logvar),
            "out": out,
        }

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Batch means of the beta-weighted negative ELBO (eq. 2), one sample z ~ q_phi(z|x).

        ``x: (B, *data_shape)``. Returns ``loss`` = recon + beta * kl, ``recon`` =
        E_q[-log p_theta(x|z)] (the reconstruction term), ``kl`` = KL(q_phi(z|x) || p(z))
        (``kl_term``) and ``constraint`` = C_ba (mean squared error per pixel, no gradient).
        """
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar)
        out = self.decoder_output(z)
        x_flat = x.flatten(start_dim=1)
        recon = -self.likelihood.log_prob(x_flat, out).mean()
        kl = self.kl_term(z, mean, logvar).mean()
        with torch.no_grad():
            constraint = squared_error_per_pixel(x_flat, self.likelihood.mean(out)).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "constraint": constraint}

    # --- generation and evaluation ------------------------------------------------------------
    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ N(0, I): ``(n, latent_dim)``."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=device)
