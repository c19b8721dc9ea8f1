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

from vhp_lightning.bounds import iw_log_marginal, squared_error_per_pixel
from vhp_lightning.io.config_values import positive_int
from vhp_lightning.models.base import LatentVariableModel, TwoLayerModel
from vhp_lightning.models.vae import VAE


def iw_objective(
    model: LatentVariableModel, x: torch.Tensor, n_importance: int, beta: float
) -> dict[str, torch.Tensor]:
    """Batch means of the beta-weighted IW objective (module docstring) over the K =
    ``n_importance`` weights of ``model.log_weights``, ``x: (B, ...)``.

    Returns ``loss`` = -mean_b logmeanexp_k [log_px + beta * (log_p - log_q)], ``recon`` (mean over
    k and b of -log p(x|.)), ``kl`` (mean of log_q - log_p) and ``constraint`` (C_ba averaged
    over the K samples, no gradient).
    """
    x_flat = x.flatten(start_dim=1)
    mean, logvar = model.encode(x)
    w = model.log_weights(x_flat, mean, logvar, n_importance)
    log_px, log_p, log_q = w["log_px"], w["log_p"], w["log_q"]
    with torch.no_grad():
        constraint = squared_error_per_pixel(x_flat, model.likelihood.mean(w["out"])).mean()
    return {
        "loss": -iw_log_marginal(log_px + beta * (log_p - log_q)).mean(),
        "recon": -log_px.mean(),
        "kl": (log_q - log_p).mean(),
        "constraint": constraint,
    }


class IWAE(VAE):
    """IWAE with one stochastic layer: the ``VAE`` (same nets, prior, importance weights and
    ``log_likelihood``) trained on the K-sample beta-weighted IW objective.

    Args:
        encoder, decoder, likelihood: as for ``VAE``.
        n_importance: K, the number of importance samples per example in training.
    """

    def __init__(self, *nets: nn.Module, n_importance: int = 16, **named_nets: nn.Module) -> None:
        super().__init__(*nets, **named_nets)
        self.n_importance = positive_int("model.n_importance (K)", n_importance)

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """``iw_objective`` over K samples z_k ~ q(z|x), ``x: (B, ...)``."""
        return iw_objective(self, x, self.n_importance, beta)


class IWAE2(TwoLayerModel):
    """IWAE with two stochastic layers: x <- z1 <- z2, p(z2) = N(0, I).

    Generative model p_theta(x|z1) p(z1|z2) p(z2); inference model q(z1|x) q(z2|z1). The nets
    have the VHP's names and shapes, so the same configs fit (``prior_encoder`` = q(z2|z1),
    ``prior_decoder`` = p(z1|z2)); unlike the VHP, the IW bound runs over joint samples
    (z1, z2)_k (``TwoLayerModel.log_weights``), not over z2 for a single z1.

    Parameter groups: ``prior_parameters()`` are p(z1|z2) and q(z2|z1), the nets that make up
    the prior of z1 and its bound, exactly as the VHP's Theta, Phi. Burda et al. train all
    parameters jointly from the first step; that is what a scheme with ``train_prior`` on from the
    start (GECO, warm-up, beta = 1) does. REWO's initial phase freezes this group, as for the VHP.

    Args (those of ``TwoLayerModel``):
        encoder: q(z1|x), ``x -> (mean, logvar)`` over z1.
        decoder: maps ``z1`` to the likelihood's parameters.
        likelihood: p_theta(x|z1) head (``nets.likelihoods``).
        prior_encoder: q(z2|z1), ``z1 -> (mean, logvar)`` over z2; must expose ``out_dim``.
        prior_decoder: p(z1|z2), ``z2 -> (mean, logvar)`` over z1.
        n_importance: K, the number of joint importance samples per example in training.
    """

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """``iw_objective`` over K joint samples (z1, z2)_k, ``x: (B, ...)``: its ``kl`` is the
        mean of log q(z1_k, z2_k|x) - log p(z1_k, z2_k)."""
        return iw_objective(self, x, self.n_importance, beta)
