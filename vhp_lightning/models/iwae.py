"""Importance-weighted autoencoders (Burda et al., 2016), the baselines of Table 2.

* ``IWAE``: one stochastic layer (L = 1), x <- z, p(z) = N(0, I);
* ``IWAE2``: two stochastic layers (L = 2), x <- z1 <- z2, p(z2) = N(0, I), the hierarchical
  IWAE the paper compares the VHP with (sec. 4.3).

Both are trained on the beta-weighted IW objective: with K samples and log-weights
log w_k = log p(x|.) + beta * [log p(latents_k) - log q(latents_k|x)], the loss is
-mean_b log (1/K) sum_k w_k. At beta = 1 this is minus the IWAE bound; beta < 1 (REWO's initial
phase, warm-up) down-weights the prior-minus-posterior part inside every weight.
"""

from __future__ import annotations

import torch
from torch import nn

from vhp_lightning.bounds import (
    gaussian_log_prob,
    iw_log_marginal,
    reparameterize,
    squared_error_per_pixel,
    std_normal_log_prob,
)
from vhp_lightning.models.base import TwoLayerModel, check_n_importance
from vhp_lightning.models.vae import VAE


def _iw_loss(
    log_px: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor, beta: float
) -> dict[str, torch.Tensor]:
    """Batch means of the beta-weighted IW objective and its parts; all inputs ``(K, B)``.

    ``loss`` = -mean_b logmeanexp_k [log_px + beta * (log_p - log_q)], ``nll`` = mean over k and
    b of -log_px, ``kl`` = mean of log_q - log_p.
    """
    log_w = log_px + beta * (log_p - log_q)
    return {
        "loss": -iw_log_marginal(log_w).mean(),
        "nll": -log_px.mean(),
        "kl": (log_q - log_p).mean(),
    }


class IWAE(VAE):
    """IWAE with one stochastic layer: the ``VAE`` (same nets, prior and ``log_likelihood``)
    trained on the K-sample beta-weighted IW objective.

    Args:
        encoder, decoder, likelihood: as for ``VAE``.
        n_importance: K, the number of importance samples per example in training.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        n_importance: int = 16,
    ) -> None:
        super().__init__(encoder, decoder, likelihood)
        self.n_importance = check_n_importance(n_importance)

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Batch means of the beta-weighted IW objective (module docstring), ``x: (B, ...)``.

        Returns ``loss``, ``nll`` (mean over the K samples of -log p(x|z_k)), ``kl`` (mean of
        log q(z_k|x) - log p(z_k)) and ``constraint`` (C_ba averaged over the K samples).
        """
        x_flat = x.flatten(start_dim=1)
        mean, logvar = self.encode(x)
        w = self.log_weights(x_flat, mean, logvar, self.n_importance)
        parts = _iw_loss(w["log_px"], w["log_pz"], w["log_qz"], beta)
        with torch.no_grad():
            x_mean = self.likelihood.mean(w["out"])
            parts["constraint"] = squared_error_per_pixel(x_flat, x_mean).mean()
        return parts


class IWAE2(TwoLayerModel):
    """IWAE with two stochastic layers: x <- z1 <- z2, p(z2) = N(0, I).

    Generative model p_theta(x|z1) p(z1|z2) p(z2); inference model q(z1|x) q(z2|z1). The nets
    have the VHP's names and shapes, so the same configs fit (``prior_encoder`` = q(z2|z1),
    ``prior_decoder`` = p(z1|z2)); unlike the VHP, the IW bound runs over joint samples
    (z1, z2)_k, not over z2 for a single z1.

    Parameter groups: ``prior_parameters()`` are p(z1|z2) and q(z2|z1), the nets that make up
    the prior of z1 and its bound, exactly as the VHP's Theta, Phi. Burda et al. train all
    parameters jointly from the first step; that is what a scheme with ``train_prior`` on from the
    start (GECO, warm-up, beta = 1) does. REWO's initial phase freezes this group, as for the VHP.

    Args:
        encoder: q(z1|x), ``x -> (mean, logvar)`` over z1.
        decoder: maps ``z1`` to the likelihood's parameters.
        likelihood: p_theta(x|z1) head (``nets.likelihoods``).
        prior_encoder: q(z2|z1), ``z1 -> (mean, logvar)`` over z2; must expose ``out_dim``.
        prior_decoder: p(z1|z2), ``z2 -> (mean, logvar)`` over z1.
        n_importance: K, the number of joint importance samples per example in training.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        prior_encoder: nn.Module,
        prior_decoder: nn.Module,
        n_importance: int = 16,
    ) -> None:
        super().__init__(encoder, decoder, likelihood, prior_encoder, prior_decoder)
        self.n_importance = check_n_importance(n_importance)

    def log_weights(
        self, x_flat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, n: int
    ) -> dict[str, torch.Tensor]:
        """The parts of n joint importance weights
        p(x|z1) p(z1|z2) p(z2) / (q(z1|x) q(z2|z1)), z1 ~ q(z1|x), z2 ~ q(z2|z1).

        ``x_flat: (B, D)``, ``mean, logvar: (B, latent_dim)`` of q(z1|x) -> ``log_px``,
        ``log_p`` (log p(z1|z2) + log p(z2)), ``log_q`` (log q(z1|x) + log q(z2|z1)), each
        ``(n, B)``, and the decoder output ``out: (n, B, D)``.
        """
        z1 = reparameterize(mean, logvar, n)  # (n, B, Dz1)
        z1_flat = z1.flatten(0, 1)
        mu2, lv2 = self.prior_encoder(z1_flat)
        z2 = reparameterize(mu2, lv2)  # (n * B, Dz2)
        mu1, lv1 = self.prior_decoder(z2)
        out = self.decoder_output(z1_flat).view(n, *x_flat.shape)
        log_p = gaussian_log_prob(z1_flat, mu1, lv1) + std_normal_log_prob(z2)
        log_q2 = gaussian_log_prob(z2, mu2, lv2)
        return {
            "log_px": self.likelihood.log_prob(x_flat, out),
            "log_p": log_p.view(n, -1),
            "log_q": gaussian_log_prob(z1, mean, logvar) + log_q2.view(n, -1),
            "out": out,
        }

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Batch means of the beta-weighted IW objective over K joint samples (z1, z2)_k.

        ``x: (B, ...)``. Returns ``loss``, ``nll`` (mean of -log p(x|z1_k)), ``kl`` (mean of
        log q(z1_k, z2_k|x) - log p(z1_k, z2_k)) and ``constraint`` (C_ba averaged over the K
        samples, no gradient).
        """
        x_flat = x.flatten(start_dim=1)
        mean, logvar = self.encode(x)
        w = self.log_weights(x_flat, mean, logvar, self.n_importance)
        parts = _iw_loss(w["log_px"], w["log_p"], w["log_q"], beta)
        with torch.no_grad():
            x_mean = self.likelihood.mean(w["out"])
            parts["constraint"] = squared_error_per_pixel(x_flat, x_mean).mean()
        return parts

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, n_samples: int = 5000, chunk_size: int = 500
    ) -> torch.Tensor:
        """Importance-sampled log p(x) (sec. 4.3, decision 7), ``x: (B, ...)`` -> ``(B,)``.

        (z1, z2) ~ q(z1|x) q(z2|z1) jointly S times (``log_weights``), averaged in log space,
        ``chunk_size * B`` samples at a time.
        """
        x_flat = x.flatten(start_dim=1)
        mean, logvar = self.encode(x)
        chunks = []
        for start in range(0, n_samples, chunk_size):
            w = self.log_weights(x_flat, mean, logvar, min(chunk_size, n_samples - start))
            chunks.append(w["log_px"] + w["log_p"] - w["log_q"])
        return iw_log_marginal(torch.cat(chunks))
