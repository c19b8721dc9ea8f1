"""What every model shares: the encoder/decoder/likelihood plumbing, the parameter groups and the
importance-sampled log-likelihood of sec. 4.3.

* ``LatentVariableModel``: q_phi(z|x), p_theta(x|z) and the likelihood head (theta, phi), and
  ``log_likelihood`` over the importance weights a subclass defines in ``log_weights``; ``VAE``
  (and through it ``IWAE`` and ``VampPrior``) builds on it.
* ``TwoLayerModel``: adds the second stochastic layer's nets, q(zeta|z) and p(z|zeta), as the
  ``prior_parameters()`` group (Theta, Phi), K, ancestral prior sampling (eq. 13) and the joint
  importance weights over (z, zeta); ``VHP`` and ``IWAE2`` build on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vhp_lightning.bounds import (
    gaussian_log_prob,
    iw_log_marginal,
    reparameterize,
    std_normal_log_prob,
)
from vhp_lightning.io.config_values import positive_int

# A convolutional net run without gradients on a CPU (the test NLL, validation) gets this many
# examples per call, so that its activation maps stay in the core's cache: on the gated MNIST
# nets the NLL ran 1.6-1.8x and the validation loss 2.6x as fast as in calls of 1000 samples.
# Outputs are the same up to float rounding; with gradients (training) the batch runs in one call.
CPU_CONV_EVAL_BATCH = 16
_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


class LatentVariableModel(nn.Module):
    """x <- z with an amortised diagonal-Gaussian encoder.

    Args:
        encoder: q_phi(z|x), maps ``x: (B, *data_shape)`` to ``(mean, logvar): (B, latent_dim)``;
            exposes ``out_dim``.
        decoder: maps ``z: (B, latent_dim)`` to the likelihood's parameters ``(B, D)`` or
            ``(B, *data_shape)``.
        likelihood: p_theta(x|z) head (``nets.likelihoods``).
    """

    encoder: nn.Module
    decoder: nn.Module
    likelihood: Any  # an nn.Module with ``log_prob(x, out)`` and ``mean(out)``

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood

    # --- parameter groups (Alg. 1 trains the second group only in the main phase) ------------
    def vae_parameters(self) -> Iterator[nn.Parameter]:
        """theta, phi: decoder, likelihood and encoder."""
        for m in (self.encoder, self.decoder, self.likelihood):
            yield from m.parameters()

    def prior_parameters(self) -> Iterator[nn.Parameter]:
        """Theta, Phi: the prior's own parameters (none here)."""
        yield from ()

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """The batch-mean objective at ``beta`` and its parts: ``loss``, ``recon``, ``kl`` and the
        constraint C_ba as ``constraint`` (each a scalar); defined by every model."""
        raise NotImplementedError

    # --- the pieces ---------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Dimension of z, read from ``encoder.out_dim``."""
        return _out_dim(self.encoder, "encoder", "z")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q_phi(z|x): ``x: (B, *data_shape)`` -> ``(mean, logvar)``, each ``(B, latent_dim)``."""
        return cache_sized_calls(self.encoder, x)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for ``z: (B, latent_dim)``, flattened to ``(B, D)``."""
        return cache_sized_calls(self.decoder, z).flatten(start_dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], ``z: (B, latent_dim)`` -> ``(B, D)`` (flattened data)."""
        return self.likelihood.mean(self.decoder_output(z))

    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ p(z): ``(n, latent_dim)``."""
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        """E[x|z] for n prior samples z: ``(n, D)``."""
        return self.decode(self.sample_prior(n))

    # --- importance weights and the log-likelihood (sec. 4.3) ---------------------------------
    def log_weights(
        self, x_flat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, n: int
    ) -> dict[str, torch.Tensor]:
        """The parts of n importance weights w = p(x, latents) / q(latents|x), latents ~ q.

        ``x_flat: (B, D)``, ``mean, logvar: (B, latent_dim)`` of q_phi(z|x) -> ``log_px``
        (log p_theta(x|z)), ``log_p`` (log-prior of the latents), ``log_q`` (log-posterior),
        each ``(n, B)``, and the decoder output ``out: (n, B, D)``.
        """
        raise NotImplementedError

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, n_samples: int = 5000, chunk_size: int = 500
    ) -> torch.Tensor:
        """Importance-sampled log p(x) (sec. 4.3, decision 7), ``x: (B, ...)`` -> ``(B,)``.

        log (1/S) sum_s w_s with the S weights of ``log_weights``, in log space; the decoder sees
        ``chunk_size * B`` samples at a time, so memory stays bounded.
        """
        x_flat = x.flatten(start_dim=1)
        mean, logvar = self.encode(x)
        chunks = []
        for start in range(0, n_samples, chunk_size):
            w = self.log_weights(x_flat, mean, logvar, min(chunk_size, n_samples - start))
            chunks.append(w["log_px"] + w["log_p"] - w["log_q"])
        return iw_log_marginal(torch.cat(chunks))


class TwoLayerModel(LatentVariableModel):
    """x <- z <- zeta with p(zeta) = N(0, I), p(z|zeta) and the proposal q(zeta|z).

    Args:
        encoder, decoder, likelihood: as for ``LatentVariableModel``.
        prior_encoder: q(zeta|z), ``z -> (mean, logvar)`` over zeta; exposes ``out_dim``.
        prior_decoder: p(z|zeta), ``zeta -> (mean, logvar)`` over z.
        n_importance: K, the number of importance samples per example in training.
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
        super().__init__(encoder, decoder, likelihood)
        self.prior_encoder, self.prior_decoder = prior_encoder, prior_decoder
        self.n_importance = positive_int("model.n_importance (K)", n_importance)

    def prior_parameters(self) -> Iterator[nn.Parameter]:
        """Theta, Phi: the prior networks p(z|zeta) and q(zeta|z)."""
        for m in (self.prior_encoder, self.prior_decoder):
            yield from m.parameters()

    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ p(z) by ancestral sampling (eq. 13): zeta ~ N(0, I), z ~ p(z|zeta); ``(n, Dz)``."""
        device = next(self.parameters()).device
        zeta = torch.randn(n, _out_dim(self.prior_encoder, "prior_encoder", "zeta"), device=device)
        return reparameterize(*self.prior_decoder(zeta))

    def log_weights(
        self, x_flat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, n: int
    ) -> dict[str, torch.Tensor]:
        """The parts of n joint importance weights
        p(x|z) p(z|zeta) p(zeta) / (q(z|x) q(zeta|z)), z ~ q(z|x), zeta ~ q(zeta|z).

        ``x_flat: (B, D)``, ``mean, logvar: (B, latent_dim)`` of q(z|x) -> ``log_px``, ``log_p``
        (log p(z|zeta) + log p(zeta)), ``log_q`` (log q(z|x) + log q(zeta|z)), each ``(n, B)``,
        and the decoder output ``out: (n, B, D)``.
        """
        z = reparameterize(mean, logvar, n)  # (n, B, Dz)
        z_flat = z.flatten(0, 1)
        mu_zeta, lv_zeta = self.prior_encoder(z_flat)
        zeta = reparameterize(mu_zeta, lv_zeta)  # (n * B, Dzeta)
        mu_z, lv_z = self.prior_decoder(zeta)
        out = self.decoder_output(z_flat).view(n, *x_flat.shape)
        log_p = gaussian_log_prob(z_flat, mu_z, lv_z) + std_normal_log_prob(zeta)
        log_q_zeta = gaussian_log_prob(zeta, mu_zeta, lv_zeta)
        return {
            "log_px": self.likelihood.log_prob(x_flat, out),
            "log_p": log_p.view(n, -1),
            "log_q": gaussian_log_prob(z, mean, logvar) + log_q_zeta.view(n, -1),
            "out": out,
        }


def cache_sized_calls(net: nn.Module, u: torch.Tensor) -> Any:
    """``net(u)``; for a convolutional ``net`` without gradients on a CPU, in calls of
    ``CPU_CONV_EVAL_BATCH`` examples whose outputs (tensors or tuples of them) are concatenated."""
    n = CPU_CONV_EVAL_BATCH
    if len(u) <= n or u.device.type != "cpu" or torch.is_grad_enabled():
        return net(u)
    if not any(isinstance(m, _CONV) for m in net.modules()):
        return net(u)
    outs = [net(part) for part in u.split(n)]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


def _out_dim(net: nn.Module, name: str, what: str) -> int:
    dim = getattr(net, "out_dim", None)
    if dim is None:
        raise AttributeError(f"{name} must expose `out_dim` (the dimension of {what})")
    return int(dim)
