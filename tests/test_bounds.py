"""Closed-form checks of vhp_lightning.bounds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from vhp_lightning import bounds


def test_gaussian_log_prob_matches_torch() -> None:
    g = torch.Generator().manual_seed(0)
    x, mean, logvar = (torch.randn(5, 3, generator=g) for _ in range(3))
    expected = D.Normal(mean, (0.5 * logvar).exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(bounds.gaussian_log_prob(x, mean, logvar), expected)
    torch.testing.assert_close(
        bounds.std_normal_log_prob(x), D.Normal(0.0, 1.0).log_prob(x).sum(-1)
    )


def test_bernoulli_log_prob_matches_torch() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 7, generator=g) * 3
    x = torch.bernoulli(torch.full((4, 7), 0.3), generator=g)
    expected = D.Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(bounds.bernoulli_log_prob(x, logits), expected)


def test_gaussian_kl_matches_torch() -> None:
    g = torch.Generator().manual_seed(2)
    mean, logvar = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    q = D.Normal(mean, (0.5 * logvar).exp())
    expected = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(bounds.gaussian_kl_std_normal(mean, logvar), expected)


def test_bf16_inputs_are_evaluated_in_float32() -> None:
    x = torch.randn(3, 5).bfloat16()
    assert bounds.std_normal_log_prob(x).dtype == torch.float32
    assert bounds.iw_log_marginal(torch.randn(4, 3).bfloat16()).dtype == torch.float32


def test_iw_log_marginal_is_log_mean_exp() -> None:
    log_w = torch.tensor([[0.0, 1000.0], [math.log(3.0), 1000.0]])
    out = bounds.iw_log_marginal(log_w)
    torch.testing.assert_close(out, torch.tensor([math.log(2.0), 1000.0]))  # no overflow


def test_squared_error_per_pixel_is_mean_over_dims() -> None:
    x = torch.zeros(2, 4)
    m = torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.2]])
    torch.testing.assert_close(bounds.squared_error_per_pixel(x, m), torch.tensor([0.01, 0.01]))


class _LinearGaussianPrior(torch.nn.Module):
    """p(z|zeta) = N(a * zeta + b, s^2): the marginal p(z) = N(b, a^2 + s^2) is exact."""

    def __init__(self, a: float, b: float, s: float) -> None:
        super().__init__()
        self.a, self.b, self.s = a, b, s
        self.out_dim = 1

    def forward(self, zeta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a * zeta + self.b, torch.full_like(zeta, 2 * math.log(self.s))


class _FixedProposal(torch.nn.Module):
    """q(zeta|z) = N(0.3 z, 1.5^2): deliberately not the exact posterior."""

    out_dim = 1

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 0.3 * z, torch.full_like(z, 2 * math.log(1.5))


def _vhp_with_linear_prior() -> torch.nn.Module:
    from vhp_lightning.models.vhp import VHP
    from vhp_lightning.nets.likelihoods import GaussianLikelihood

    lin = torch.nn.Linear(1, 1)
    return VHP(
        encoder=lin,
        decoder=lin,
        likelihood=GaussianLikelihood(sigma=1.0),
        prior_encoder=_FixedProposal(),
        prior_decoder=_LinearGaussianPrior(2.0, 0.5, 0.7),
    )


@pytest.mark.parametrize("k_small,k_large", [(1, 4096)])
def test_iw_bound_on_log_prior_tightens_to_exact_marginal(k_small: int, k_large: int) -> None:
    """Eq. 8: the K-sample bound is below log p(z) and approaches it as K grows."""
    torch.manual_seed(0)
    model = _vhp_with_linear_prior()
    z = torch.linspace(-3, 3, 7).unsqueeze(-1)
    exact = D.Normal(0.5, math.sqrt(2.0**2 + 0.7**2)).log_prob(z).squeeze(-1)
    reps = 400
    small = torch.stack([model.log_prior(z, k_small) for _ in range(reps)]).mean(0)
    large = torch.stack([model.log_prior(z, k_large) for _ in range(10)]).mean(0)
    assert torch.all(small < exact)  # a lower bound in expectation, with a real gap at K = 1
    assert (exact - small).mean() > 0.05
    torch.testing.assert_close(large, exact, atol=0.02, rtol=0)


def test_kl_bound_converges_to_exact_kl() -> None:
    """F (eq. 8) with large K equals KL(q(z|x) || p(z)) for a Gaussian q and exact Gaussian p(z)."""
    torch.manual_seed(0)
    model = _vhp_with_linear_prior()
    q_mean, q_std = torch.tensor([[0.8]]), 0.4
    exact_kl = D.kl_divergence(
        D.Normal(q_mean, q_std), D.Normal(0.5, math.sqrt(2.0**2 + 0.7**2))
    ).sum()
    z = q_mean + q_std * torch.randn(20000, 1)
    log_q = bounds.gaussian_log_prob(z, q_mean, torch.full_like(z, 2 * math.log(q_std)))
    f_small = bounds.vhp_kl_bound(log_q, model.log_prior(z, 1)).mean()
    f_large = bounds.vhp_kl_bound(log_q, model.log_prior(z, 256)).mean()
    assert f_small > exact_kl + 0.05  # an upper bound with a visible gap at K = 1
    assert abs(f_large - exact_kl) < 0.03
