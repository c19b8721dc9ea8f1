"""Generative models, one file each. Each is a plain ``nn.Module`` with

* ``loss(x, beta) -> dict`` of batch means (scalars): ``loss`` (the objective to minimise at this
  beta; ``recon + beta * kl`` for ELBO-type models, the beta-weighted IW objective for IWAE),
  ``recon`` (E_q[-log p(x|z)], the reconstruction term), ``kl`` (the KL term or its bound F),
  ``constraint`` (C_ba of sec. 2.1, no gradient) and optional diagnostics;
* ``vae_parameters()`` (theta, phi) and ``prior_parameters()`` (Theta, Phi; may be empty);
* ``log_likelihood(x, n_samples)`` -> ``(B,)`` importance-sampled log p(x) (sec. 4.3);
* ``encode``, ``decode``, ``sample``.
"""

from vhp_lightning.models.iwae import IWAE, IWAE2
from vhp_lightning.models.vae import VAE
from vhp_lightning.models.vampprior import VampPrior
from vhp_lightning.models.vhp import VHP

__all__ = ["VHP", "VAE", "IWAE", "IWAE2", "VampPrior"]
