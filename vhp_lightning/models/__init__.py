"""Generative models, one file each. Each is a plain ``nn.Module`` with

* ``loss(x) -> dict`` of batch means: ``nll`` (E_q[-log p(x|z)]), ``kl`` (the KL term or its bound
  F), ``constraint`` (C_ba, sec. 2.1) and diagnostics; the LightningModule forms
  ``nll + beta * kl``;
* ``vae_parameters()`` (theta, phi) and ``prior_parameters()`` (Theta, Phi; may be empty);
* ``log_likelihood(x, n_samples)`` -> ``(B,)`` importance-sampled log p(x) (sec. 4.3);
* ``encode``, ``decode``, ``sample``.
"""

from vhp_lightning.models.vhp import VHP

__all__ = ["VHP"]
