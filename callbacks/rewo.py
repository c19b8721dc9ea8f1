"""REWO, Alg. 1 of the paper: reconstruction-error-based weighting of the objective."""

from __future__ import annotations

import math

from vhp_lightning.callbacks.base import BetaScheme, _check_number, clamp_log_beta


def rewo_beta_update(beta: float, delta: float, nu: float, tau: float) -> float:
    """beta_t of eq. 11: beta * exp[nu * f_beta(beta, delta; tau) * delta], delta = C_t - kappa^2.

    f_beta (eq. 12) = (1 - H(delta)) * tanh(tau * (beta - 1)) - H(delta), with H(0) = 0. While the
    constraint is violated (delta > 0) this is GECO's update (beta shrinks); while it holds, the
    tanh factor moves beta up towards 1 and never past it (the result is clamped to (0, 1]).
    Computed in log space so a huge violation gives a tiny positive beta, not 0 or NaN.
    """
    heaviside = 1.0 if delta > 0 else 0.0
    f_beta = (1.0 - heaviside) * math.tanh(tau * (beta - 1.0)) - heaviside
    return clamp_log_beta(math.log(beta) + nu * f_beta * delta, upper=0.0)


class REWO(BetaScheme):
    """Alg. 1: an initial phase that fits the reconstruction, then beta grows towards 1 (eq. 11).

    Initial phase: beta stays at ``beta_init`` (<< 1) and only the encoder/decoder are trained
    (``train_prior = False``). The first step with C_t < kappa^2 switches to the main phase for
    good: from then on all parameters are trained and beta follows :meth:`main_phase_update`
    every step (eq. 11 here; eq. 14-15 in ``REWOAlt``, which shares this class's phases).
    """

    name = "rewo"
    beta_init_below_one = False  # True where the main-phase update needs beta_init < 1

    def __init__(
        self,
        kappa: float = 0.02,
        nu: float = 5.0,
        tau: float = 3.0,
        alpha: float = 0.99,
        beta_init: float = 1e-4,
        plateau_steps: int = 5_000,
    ) -> None:
        high_open = self.beta_init_below_one
        _check_number("beta_init", beta_init, low=0.0, high=1.0, low_open=True, high_open=high_open)
        super().__init__(
            beta_init, train_prior=False, kappa=kappa, alpha=alpha, plateau_steps=plateau_steps
        )
        _check_number("nu", nu, low=0.0, low_open=True)
        _check_number("tau", tau, low=0.0, low_open=True)
        self.nu, self.tau = float(nu), float(tau)

    def update(self, c_hat: float) -> None:
        """Alg. 1: leave the initial phase at the first C_t < kappa^2, then update beta."""
        assert self.kappa_sq is not None
        if not self.train_prior and c_hat < self.kappa_sq:
            self.train_prior = True  # INITIALPHASE = FALSE, once and for all
            self.switch_step = self.step
        if self.train_prior:
            self.main_phase_update(c_hat - self.kappa_sq)

    def main_phase_update(self, delta: float) -> None:
        """beta of eq. 11 from ``delta = C_t - kappa^2`` (one step of the main phase)."""
        self.beta = rewo_beta_update(self.beta, delta, self.nu, self.tau)
