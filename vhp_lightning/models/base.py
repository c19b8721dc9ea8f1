"""What every model shares: the encoder/decoder/likelihood plumbing and the parameter groups.

* ``LatentVariableModel``: q_phi(z|x), p_theta(x|z) and the likelihood head (theta, phi);
  ``VAE`` (and through it ``IWAE`` and ``VampPrior``) builds on it.
* ``TwoLayerModel``: adds the second stochastic layer's nets, q(zeta|z) and p(z|zeta), as the
  ``prior_parameters()`` group (Theta, Phi) and ancestral prior sampling (eq. 13); ``VHP`` and
  ``IWAE2`` build on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vhp_lightning.bounds import reparameterize


class LatentVariableModel(nn.Module):
    """x <- z with an amortised diagonal-Gaussian encoder.

    Args:
        encoder: q_phi(z|x), maps ``x: (B, *data_shape)`` to ``(mean, logvar): (B, latent_dim)``;
            exposes ``out_dim``.
        decoder: maps ``z: (B, latent_dim)`` to the likelihood's parameters ``(B, D)`` or
            ``(B, *data_shape)``.
        likelihood: p_theta(x|z) head (``nets.likelihoods``).
    """

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

    # --- the pieces ---------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Dimension of z, read from ``encoder.out_dim``."""
        return _out_dim(self.encoder, "encoder", "z")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q_phi(z|x): ``x: (B, *data_shape)`` -> ``(mean, logvar)``, each ``(B, latent_dim)``."""
        return self.encoder(x)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for ``z: (B, latent_dim)``, flattened to ``(B, D)``."""
        return self.decoder(z).flatten(start_dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], ``z: (B, latent_dim)`` -> ``(B, D)`` (flattened data)."""
        return self.likelihood.mean(self.decoder_output(z))

    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ p(z): ``(n, latent_dim)``."""
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        """E[x|z] for n prior samples z: ``(n, D)``."""
        return self.decode(self.sample_prior(n))


class TwoLayerModel(LatentVariableModel):
    """x <- z <- zeta with p(zeta) = N(0, I), p(z|zeta) and the proposal q(zeta|z).

    Args:
        encoder, decoder, likelihood: as for ``LatentVariableModel``.
        prior_encoder: q(zeta|z), ``z -> (mean, logvar)`` over zeta; exposes ``out_dim``.
        prior_decoder: p(z|zeta), ``zeta -> (mean, logvar)`` over z.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        prior_encoder: nn.Module,
        prior_decoder: nn.Module,
    ) -> None:
        super().__init__(encoder, decoder, likelihood)
        self.prior_encoder, self.prior_decoder = prior_encoder, prior_decoder

    def prior_parameters(self) -> Iterator[nn.Parameter]:
        """Theta, Phi: the prior networks p(z|zeta) and q(zeta|z)."""
        for m in (self.prior_encoder, self.prior_decoder):
            yield from m.parameters()

    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ p(z) by ancestral sampling (eq. 13): zeta ~ N(0, I), z ~ p(z|zeta); ``(n, Dz)``."""
        device = next(self.parameters()).device
        zeta = torch.randn(n, _out_dim(self.prior_encoder, "prior_encoder", "zeta"), device=device)
        return reparameterize(*self.prior_decoder(zeta))


def check_n_importance(n_importance: int) -> int:
    """K, the number of importance samples: an integer >= 1 (else a ValueError naming the key)."""
    if isinstance(n_importance, bool) or not isinstance(n_importance, int) or n_importance < 1:
        raise ValueError(f"model.n_importance (K) must be an integer >= 1, got {n_importance!r}")
    return n_importance


def _out_dim(net: nn.Module, name: str, what: str) -> int:
    dim = getattr(net, "out_dim", None)
    if dim is None:
        raise AttributeError(f"{name} must expose `out_dim` (the dimension of {what})")
    return int(dim)
