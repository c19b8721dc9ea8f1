"""The alternative beta-update of App. B.1 (eq. 14-15), with REWO's initial phase."""

from __future__ import annotations

import math

from vhp_lightning.callbacks.base import BetaScheme, _check_number, clamp_log_beta

LOG_GAMMA_BOUND = 60.0  # |log gamma| stays below this: exp() never overflows


def rewo_alt_update(log_gamma: float, delta: float, nu: float, tau: float) -> tuple[float, float]:
    """gamma_t = gamma_{t-1} exp(nu * delta) (eq. 14), beta_t = 1 / (1 + tau * gamma_t) (eq. 15).

    Returns ``(log gamma_t, beta_t)``; beta = exp(-softplus(log tau + log gamma)) is evaluated
    stably, so beta stays in (0, 1] for any violation.
    """
    log_gamma = min(max(log_gamma + nu * delta, -LOG_GAMMA_BOUND), LOG_GAMMA_BOUND)
    s = math.log(tau) + log_gamma
    softplus = s + math.log1p(math.exp(-s)) if s > 0 else math.log1p(math.exp(s))
    return log_gamma, clamp_log_beta(-softplus, upper=0.0)


class REWOAlt(BetaScheme):
    """Initial phase as in REWO (Alg. 1), then beta = 1 / (1 + tau * gamma) (App. B.1).

    gamma_0 is chosen so that beta starts at ``beta_init``: gamma_0 = (1 / beta_init - 1) / tau.
    """

    name = "rewo_alt"

    def __init__(
        self,
        kappa: float = 0.02,
        nu: float = 5.0,
        tau: float = 3.0,
        alpha: float = 0.99,
        beta_init: float = 1e-4,
        plateau_steps: int = 5_000,
    ) -> None:
        _check_number("beta_init", beta_init, low=0.0, high=1.0, low_open=True, high_open=True)
        super().__init__(
            beta_init, train_prior=False, kappa=kappa, alpha=alpha, plateau_steps=plateau_steps
        )
        _check_number("nu", nu, low=0.0, low_open=True)
        _check_number("tau", tau, low=0.0, low_open=True)
        self.nu, self.tau = float(nu), float(tau)
        self.log_gamma = math.log((1.0 / beta_init - 1.0) / tau)

    def update(self, c_hat: float) -> None:
        assert self.kappa_sq is not None
        if not self.train_prior and c_hat < self.kappa_sq:
            self.train_prior = True
            self.switch_step = self.step
        if self.train_prior:
            self.log_gamma, self.beta = rewo_alt_update(
                self.log_gamma, c_hat - self.kappa_sq, self.nu, self.tau
            )

    def state_dict(self) -> dict:
        return {**super().state_dict(), "log_gamma": self.log_gamma}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.log_gamma = float(state_dict["log_gamma"])
