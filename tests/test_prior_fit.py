"""The VHP's prior nets, as the default config builds them, fit a ring of fixed latents (the shape
of the pendulum's aggregate posterior, sec. 4.1, Fig. 2) instead of collapsing to one Gaussian
with q(zeta|z) = N(0, I) (docs/pendulum.md, "Second-layer collapse")."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from vhp_lightning.models.vhp import VHP


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _ring(n: int, g: torch.Generator) -> torch.Tensor:
    theta = torch.rand(n, generator=g) * 2 * math.pi
    return torch.stack([theta.cos(), theta.sin()], 1) + 0.02 * torch.randn(n, 2, generator=g)


def _fit_ring(prior_encoder: nn.Module, prior_decoder: nn.Module, steps: int) -> dict[str, float]:
    """Maximise the K = 16 IW bound on log p(z) (eq. 8) over a unit ring of fixed z."""
    model = VHP(_Identity(), _Identity(), _Identity(), prior_encoder, prior_decoder, 16)
    opt = torch.optim.Adam(model.prior_parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = -model.log_prior(_ring(128, g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        zeta_mean, _ = prior_encoder(_ring(2000, g))
        radius = model.sample_prior(2000).norm(dim=1)
        return {
            "zeta_spread": float(zeta_mean.std(0).mean()),  # ~0: q(zeta|z) ignores z
            "ring_fraction": float(((radius > 0.8) & (radius < 1.2)).float().mean()),
            "neg_log_p": float(-model.log_prior(_ring(2000, g)).mean()),
        }


@pytest.mark.slow
def test_default_prior_nets_learn_a_ring_not_a_blob(compose_cfg) -> None:
    """The best single Gaussian for this ring has -log p = 2.147 and puts ~30 % of its samples
    within 20 % of the radius. App. F's nets with PyTorch's default init stayed exactly there
    (q(zeta|z) mean spread <= 0.003) for 4 of 4 seeds; with He init (the config's default) they
    leave it (spread 0.5-0.7, -log p 0.6-2.0 after 2000 steps, depending on the seed)."""
    cfg = compose_cfg("paper/nets=mlp", "paper.latent_dim=2")
    torch.manual_seed(0)
    nets = instantiate(cfg.model.prior_encoder), instantiate(cfg.model.prior_decoder)
    fit = _fit_ring(*nets, steps=2000)
    assert fit["zeta_spread"] > 0.2, fit  # q(zeta|z) depends on z
    assert fit["neg_log_p"] < 2.05, fit  # better than any single Gaussian (2.147)
    assert fit["ring_fraction"] > 0.35, fit
