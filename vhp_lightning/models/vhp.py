"""The variational hierarchical prior (VHP), sec. 2.2: p_Theta(z) = int p_Theta(z|zeta) p(zeta)."""

from __future__ import annotations

import math

import torch
from torch import nn

from vhp_lightning.bounds import (
    gaussian_kl_std_normal,
    gaussian_log_prob,
    iw_log_marginal,
    reparameterize,
    squared_error_per_pixel,
    std_normal_log_prob,
    vhp_kl_bound,
)
from vhp_lightning.models.base import TwoLayerModel, check_n_importance

PRIOR_BOUNDS = ("iw", "elbo")


class VHP(TwoLayerModel):
    """Two stochastic layers: x <- z <- zeta, with amortised q_phi(z|x) and q_Phi(zeta|z).

    Args:
        encoder: q_phi(z|x), maps ``x: (B, *data_shape)`` to ``(mean, logvar): (B, latent_dim)``.
        decoder: maps ``z: (B, latent_dim)`` to the likelihood's parameters ``(B, D)`` or
            ``(B, *data_shape)``.
        likelihood: p_theta(x|z) head (``nets.likelihoods``).
        prior_encoder: q_Phi(zeta|z), ``z -> (mean, logvar)`` over zeta.
        prior_decoder: p_Theta(z|zeta), ``zeta -> (mean, logvar)`` over z.
        n_importance: K of eq. 8.
        prior_bound: ``"iw"`` (eq. 8) or ``"elbo"`` (App. B.4: a one-sample ELBO on log p(z),
            log p(z|zeta) - KL(q(zeta|z) || p(zeta)), instead of the IW bound).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        prior_encoder: nn.Module,
        prior_decoder: nn.Module,
        n_importance: int = 16,
        prior_bound: str = "iw",
    ) -> None:
        super().__init__(encoder, decoder, likelihood, prior_encoder, prior_decoder)
        if prior_bound not in PRIOR_BOUNDS:
            raise ValueError(
                f"Unknown model.prior_bound {prior_bound!r}. "
                f"Choose one of: {', '.join(PRIOR_BOUNDS)}."
            )
        self.n_importance, self.prior_bound = check_n_importance(n_importance), prior_bound

    # --- the prior and the bound (eq. 8, 9) ---------------------------------------------------
    def log_prior(self, z: torch.Tensor, n_importance: int | None = None) -> torch.Tensor:
        """Lower bound on log p_Theta(z), ``z: (B, latent_dim)`` -> ``(B,)``.

        ``prior_bound="iw"``: the K-sample importance-weighted bound inside eq. 8 with
        zeta_k ~ q_Phi(zeta|z). ``"elbo"``: log p_Theta(z|zeta) - KL(q_Phi(zeta|z) || p(zeta)),
        zeta ~ q_Phi(zeta|z) (App. B.4).
        """
        mu_zeta, lv_zeta = self.prior_encoder(z)
        if self.prior_bound == "elbo":
            zeta = reparameterize(mu_zeta, lv_zeta)
            mu_z, lv_z = self.prior_decoder(zeta)
            return gaussian_log_prob(z, mu_z, lv_z) - gaussian_kl_std_normal(mu_zeta, lv_zeta)
        k = n_importance or self.n_importance
        zeta = reparameterize(mu_zeta, lv_zeta, k)  # (K, B, Dzeta)
        mu_z, lv_z = self.prior_decoder(zeta.flatten(0, 1))
        mu_z, lv_z = mu_z.view(k, *z.shape), lv_z.view(k, *z.shape)
        log_w = (
            gaussian_log_prob(z, mu_z, lv_z)
            + std_normal_log_prob(zeta)
            - gaussian_log_prob(zeta, mu_zeta, lv_zeta)
        )
        return iw_log_marginal(log_w)

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Batch means of the terms of L_VHP (eq. 9), divided by lambda (decision 2).

        ``x: (B, *data_shape)``. Returns ``loss`` = nll + beta * kl, ``nll`` =
        E_q[-log p_theta(x|z)], ``kl`` = F (eq. 8), ``constraint`` = C_ba (mean squared error
        per pixel), ``log_q_z`` and ``log_p_z`` (the bound on log p_Theta(z)).
        """
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar)
        out = self.decoder_output(z)
        x_flat = x.flatten(start_dim=1)
        log_px = self.likelihood.log_prob(x_flat, out)
        log_q_z = gaussian_log_prob(z, mean, logvar)
        log_p_z = self.log_prior(z)
        with torch.no_grad():
            constraint = squared_error_per_pixel(x_flat, self.likelihood.mean(out)).mean()
        nll, kl = -log_px.mean(), vhp_kl_bound(log_q_z, log_p_z).mean()
        return {
            "loss": nll + beta * kl,
            "nll": nll,
            "kl": kl,
            "constraint": constraint,
            "log_q_z": log_q_z.detach().mean(),
            "log_p_z": log_p_z.detach().mean(),
        }

    # --- generation and evaluation ------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, n_samples: int = 5000, chunk_size: int = 500
    ) -> torch.Tensor:
        """Importance-sampled log p(x) (sec. 4.3, decision 7), ``x: (B, ...)`` -> ``(B,)``.

        (z, zeta) ~ q_phi(z|x) q_Phi(zeta|z) jointly; the S weights
        p(x|z) p_Theta(z|zeta) p(zeta) / (q_phi(z|x) q_Phi(zeta|z)) are averaged in log space,
        ``chunk_size`` samples at a time so memory stays bounded.
        """
        x_flat = x.flatten(start_dim=1)
        mean, logvar = self.encode(x)
        log_w_chunks = []
        for start in range(0, n_samples, chunk_size):
            s = min(chunk_size, n_samples - start)
            z = reparameterize(mean, logvar, s)  # (s, B, Dz)
            mu_zeta, lv_zeta = self.prior_encoder(z.flatten(0, 1))
            zeta = reparameterize(mu_zeta, lv_zeta)
            mu_z, lv_z = self.prior_decoder(zeta)
            out = self.decoder_output(z.flatten(0, 1))
            log_w = (
                self.likelihood.log_prob(x_flat.repeat(s, 1), out)
                + gaussian_log_prob(z.flatten(0, 1), mu_z, lv_z)
                + std_normal_log_prob(zeta)
                - gaussian_log_prob(zeta, mu_zeta, lv_zeta)
            ).view(s, -1) - gaussian_log_prob(z, mean, logvar)
            log_w_chunks.append(log_w)
        log_w = torch.cat(log_w_chunks)
        return torch.logsumexp(log_w, dim=0) - math.log(n_samples)
