"""pythae's VAE, IWAE and VampPrior (VAMP) built on *our* networks, for ``bench_throughput.py``.

pythae (a bench-only dependency) wants its encoders and decoders as ``BaseEncoder`` /
``BaseDecoder`` returning a ``ModelOutput``. The two adapters below wrap the very ``nn.Module``s
that ``conf/model/*.yaml`` builds, so both libraries train identical layer sizes:

* ``PythaeEncoder``: our ``(mean, logvar)`` encoder -> ``embedding`` / ``log_covariance``;
* ``PythaeDecoder``: our decoder -> ``reconstruction`` of shape ``(N, *data_shape)``. pythae's
  ``"bce"`` loss takes probabilities (not logits), so a Bernoulli decoder ends in a sigmoid;
  its ``"mse"`` loss (a unit-variance Gaussian) takes the mean as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pythae.models import IWAE, VAE, VAMP, IWAEConfig, VAEConfig, VAMPConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from torch import nn

KINDS = ("vae", "iwae", "vamp")


class PythaeEncoder(BaseEncoder):
    """q_phi(z|x) as pythae expects it: ``x: (B, *data_shape)`` -> ``ModelOutput``."""

    def __init__(self, net: nn.Module) -> None:
        BaseEncoder.__init__(self)
        self.net = net

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mean, logvar = self.net(x)
        return ModelOutput(embedding=mean, log_covariance=logvar)


class PythaeDecoder(BaseDecoder):
    """p_theta(x|z) as pythae expects it: ``z: (N, latent)`` -> ``(N, *data_shape)``."""

    def __init__(self, net: nn.Module, data_shape: Sequence[int], bernoulli: bool) -> None:
        BaseDecoder.__init__(self)
        self.net, self.data_shape, self.bernoulli = net, tuple(data_shape), bernoulli

    def forward(self, z: torch.Tensor) -> ModelOutput:
        out = self.net(z).reshape(-1, *self.data_shape)
        return ModelOutput(reconstruction=torch.sigmoid(out) if self.bernoulli else out)


def build_pythae(
    kind: str,
    encoder: nn.Module,
    decoder: nn.Module,
    data_shape: Sequence[int],
    latent_dim: int,
    bernoulli: bool,
    iwae_samples: int = 16,
    vamp_components: int = 500,
) -> nn.Module:
    """A pythae model of ``kind`` (``vae`` | ``iwae`` | ``vamp``) around our encoder/decoder."""
    common = {
        "input_dim": tuple(int(d) for d in data_shape),
        "latent_dim": int(latent_dim),
        "reconstruction_loss": "bce" if bernoulli else "mse",
    }
    if kind == "vae":
        model_cls, config = VAE, VAEConfig(**common)
    elif kind == "iwae":
        model_cls, config = IWAE, IWAEConfig(**common, number_samples=int(iwae_samples))
    elif kind == "vamp":
        model_cls, config = VAMP, VAMPConfig(**common, number_components=int(vamp_components))
    else:
        raise ValueError(f"Unknown pythae model {kind!r}. Choose one of: {', '.join(KINDS)}.")
    return model_cls(config, PythaeEncoder(encoder), PythaeDecoder(decoder, data_shape, bernoulli))
