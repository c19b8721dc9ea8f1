"""The pendulum latent-angle metrics (sec. 4.1, App. B.3, decision 8) on known latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vhp_lightning.analysis.pendulum import (
    arcsin_ols_error,
    fit_circle,
    knn_angle_error,
    latent_angle_report,
    loop_shape,
    polar_ols_error,
    prior_fit_report,
    wrap_angle,
)

N = 2000


@pytest.fixture
def angles() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 2 * np.pi, N)


def ring(angles: np.ndarray, orientation: int, offset: float, noise: float = 0.01) -> np.ndarray:
    """Latents on a circle (centre (3, -1), radius 2.5) at polar angle orientation*angle+offset."""
    phi = orientation * angles + offset
    rng = np.random.default_rng(1)
    points = np.column_stack([3 + 2.5 * np.cos(phi), -1 + 2.5 * np.sin(phi)])
    return points + noise * rng.standard_normal(points.shape)


@pytest.mark.parametrize(("orientation", "offset"), [(1, 0.0), (1, 2.0), (-1, 1.3), (-1, -3.0)])
def test_noisy_ring_gives_near_zero_errors(angles, orientation, offset):
    latents = ring(angles, orientation, offset)
    result = polar_ols_error(latents, angles)
    assert result["error"] < 0.05
    assert result["error_unit_slope"] < 0.05
    assert result["orientation"] == orientation
    assert result["slope"] == pytest.approx(orientation, abs=0.02)
    # theta = s * (phi - offset), so the fitted intercept is -s * offset (mod 2 pi).
    assert abs(wrap_angle(result["offset"] + orientation * offset)) < 0.02
    np.testing.assert_allclose(result["centre"], [3.0, -1.0], atol=0.02)
    assert result["radius"] == pytest.approx(2.5, abs=0.02)
    assert knn_angle_error(latents, angles) < 0.05


def test_circle_fit_centre_is_unbiased_by_uneven_coverage():
    # Three quarters of the points crowd one arc: the mean moves, the circle fit does not.
    rng = np.random.default_rng(0)
    phi = np.concatenate([rng.uniform(0, 0.5, 1500), rng.uniform(0, 2 * np.pi, 500)])
    points = np.column_stack([1 + 2 * np.cos(phi), 2 * np.sin(phi)])
    centre, radius = fit_circle(points)
    np.testing.assert_allclose(centre, [1.0, 0.0], atol=1e-9)
    assert radius == pytest.approx(2.0)
    assert np.linalg.norm(points.mean(axis=0) - [1.0, 0.0]) > 0.5


def test_random_latents_give_large_errors(angles):
    latents = np.random.default_rng(2).standard_normal((N, 2))
    assert polar_ols_error(latents, angles)["error"] > 1.0
    assert knn_angle_error(latents, angles) > 1.0


def test_knn_error_is_small_on_a_non_circular_loop(angles):
    # A simple closed loop folded over its centre: the angle is in the latent, but its polar
    # angle around the fitted centre is not linear in the joint angle.
    latents = np.column_stack([np.cos(angles), 0.3 * np.sin(angles) + 0.8 * np.cos(angles) ** 2])
    latents += 0.005 * np.random.default_rng(3).standard_normal(latents.shape)
    polar = polar_ols_error(latents, angles)["error"]
    knn = knn_angle_error(latents, angles)
    assert knn < 0.05
    assert polar > 5 * knn  # the ring reading misses it
    report = latent_angle_report(latents, angles)
    assert report["knn_angle_error"] == pytest.approx(knn)
    assert report["polar_ols_error"] == pytest.approx(polar)
    assert set(report) == {"arcsin_ols_error", "polar_ols_error", "knn_angle_error", "polar_slope"}
    assert report["arcsin_ols_error"] == pytest.approx(arcsin_ols_error(latents, angles))


def test_errors_never_exceed_pi():
    rng = np.random.default_rng(4)
    wrapped = wrap_angle(rng.uniform(-50, 50, 10_000))
    assert wrapped.min() > -np.pi and wrapped.max() <= np.pi
    assert wrap_angle(np.pi) == pytest.approx(np.pi) and wrap_angle(-np.pi) == pytest.approx(np.pi)
    for seed in range(3):
        latents = rng.standard_normal((300, 2))
        angles = rng.uniform(-10, 10, 300)
        assert 0 <= polar_ols_error(latents, angles)["error"] <= np.pi
        assert 0 <= knn_angle_error(latents, angles, k=3, folds=3, random_state=seed) <= np.pi


def test_metrics_reject_bad_shapes(angles):
    with pytest.raises(ValueError, match=r"needs 2-d latents"):
        polar_ols_error(np.zeros((N, 3)), angles)
    with pytest.raises(ValueError, match=r"angles must be \(N,\)"):
        knn_angle_error(np.zeros((N, 2)), angles[:10])
    with pytest.raises(ValueError, match="k=50"):
        knn_angle_error(np.zeros((20, 2)), angles[:20], k=50)


def test_arcsin_statistic_is_exact_on_a_half_ring_and_folds_a_full_one():
    # App. B.3: on a half-turn (theta in (-pi/2, pi/2)) of a ring centred at its mean,
    # arcsin(z2 / r) is the angle itself, so the OLS is exact. The second half folds onto the
    # first: over a full turn even a perfect ring keeps an error of the order of a radian.
    theta = np.linspace(-np.pi / 2 + 0.01, np.pi / 2 - 0.01, 501)
    half = np.column_stack(
        [np.concatenate([np.cos(theta), -np.cos(theta)]), np.r_[np.sin(theta), np.sin(theta)]]
    )
    assert arcsin_ols_error(half, np.r_[theta, theta]) < 1e-9
    full = np.random.default_rng(0).uniform(0, 2 * np.pi, N)
    perfect = arcsin_ols_error(np.column_stack([np.cos(full), np.sin(full)]), full)
    noise = arcsin_ols_error(np.random.default_rng(1).standard_normal((N, 2)), full)
    assert 0.5 < perfect < noise < 2.0


class _CollapsedPrior(torch.nn.Module):
    """A two-layer prior whose q(zeta|z) ignores z and whose p(z|zeta) is N(0, 4 I)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def prior_encoder(self, z):
        return torch.zeros(len(z), 3) + self.w, torch.zeros(len(z), 3)

    def prior_decoder(self, zeta):
        return torch.zeros(len(zeta), 2), torch.full((len(zeta), 2), float(np.log(4.0)))


def test_prior_fit_report_on_a_collapsed_second_layer():
    latents = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    prior = torch.tensor([[2.0, 0.0], [0.0, -2.0]])
    report = prior_fit_report(_CollapsedPrior(), latents, prior)
    assert report["encoded_radius_mean"] == pytest.approx(1.0)
    assert report["encoded_radius_std"] == pytest.approx(0.0)
    assert report["prior_radius_mean"] == pytest.approx(2.0)
    assert report["q_zeta_spread"] == 0.0 and report["p_z_mean_spread"] == 0.0
    assert report["p_z_std"] == pytest.approx(2.0)
    # A one-layer model: radii only.
    assert set(prior_fit_report(torch.nn.Linear(1, 1), latents, prior)) == {
        "encoded_radius_mean",
        "encoded_radius_std",
        "prior_radius_mean",
        "prior_radius_std",
    }


def test_loop_shape_is_one_and_zero_on_a_ring_and_the_axis_ratio_on_an_ellipse() -> None:
    phi = np.linspace(0, 2 * np.pi, 4000, endpoint=False)  # evenly spaced: exact moments
    circle = loop_shape(np.c_[3 + 2 * np.cos(phi), -1 + 2 * np.sin(phi)])
    assert circle["loop_axis_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert circle["loop_radius_cv"] == pytest.approx(0.0, abs=1e-9)
    ellipse = loop_shape(np.c_[2 * np.cos(phi), 0.5 * np.sin(phi)])  # semi-axes 2 and 0.5
    assert ellipse["loop_axis_ratio"] == pytest.approx(0.25, rel=1e-6)
    assert ellipse["loop_radius_cv"] > 0.3
    with pytest.raises(ValueError, match=r"latents must be \(N >= 3, 2\), got shape \(2, 2\)"):
        loop_shape(np.zeros((2, 2)))
