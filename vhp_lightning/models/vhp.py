"""The variational hierarchical prior (VHP), sec. 2.2: p_Theta(z) = int p_Theta(z|zeta) p(zeta)."""

from __future__ import annotations

from typing import Any

import torch

from vhp_lightning.bounds import (
    gaussian_kl_std_normal,
    gaussian_log_prob,
    iw_log_marginal,
    reparameterize,
    squared_error_per_pixel,
    std_normal_log_prob,
    vhp_kl_bound,
)
from vhp_lightning.models.base import TwoLayerModel

PRIOR_BOUNDS = ("iw", "elbo")


class VHP(TwoLayerModel):
    """Two stochastic layers: x <- z <- zeta, with amortised q_phi(z|x) and q_Phi(zeta|z).

    Its test log-likelihood is ``log_likelihood`` over the joint samples (z, zeta) of
    ``TwoLayerModel.log_weights`` (sec. 4.3, decision 7).

    Args:
        encoder, decoder, likelihood, prior_encoder, prior_decoder: as for ``TwoLayerModel``
            (q_phi(z|x), the mean of p_theta(x|z), its head, q_Phi(zeta|z), p_Theta(z|zeta)).
        n_importance: K of eq. 8.
        prior_bound: ``"iw"`` (eq. 8) or ``"elbo"`` (App. B.4: a one-sample ELBO on log p(z),
            log p(z|zeta) - KL(q(zeta|z) || p(zeta)), instead of the IW bound).
    """

    def __init__(self, *args: Any, prior_bound: str = "iw", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if prior_bound not in PRIOR_BOUNDS:
            raise ValueError(
                f"Unknown model.prior_bound {prior_bound!r}. "
                f"Choose one of: {', '.join(PRIOR_BOUNDS)}."
            )
        self.prior_bound = prior_bound

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

        ``x: (B, *data_shape)``. Returns ``loss`` = recon + beta * kl, ``recon`` =
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
        recon, kl = -log_px.mean(), vhp_kl_bound(log_q_z, log_p_z).mean()
        return {
            "loss": recon + beta * kl,
            "recon": recon,
            "kl": kl,
            "constraint": constraint,
            "log_q_z": log_q_z.detach().mean(),
            "log_p_z": log_p_z.detach().mean(),
        }
