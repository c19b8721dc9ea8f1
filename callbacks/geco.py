"""GECO (Rezende & Viola 2018) as written in sec. 2.1 of the paper, for comparison with REWO."""

from __future__ import annotations

import math

from vhp_lightning.callbacks.base import LOG_BETA_MAX, BetaScheme, _check_number, clamp_log_beta


def geco_beta_update(beta: float, delta: float, nu: float) -> float:
    """beta_t = 1 / lambda_t with lambda_t = lambda_{t-1} exp(nu * delta) (eq. 5).

    delta = C_t - kappa^2. beta shrinks while the constraint is violated and grows without the
    cap at 1 while it holds (the behaviour REWO fixes). Log space keeps it finite and > 0.
    """
    return clamp_log_beta(math.log(beta) - nu * delta, upper=LOG_BETA_MAX)


class GECO(BetaScheme):
    """All parameters trained from the first step; beta = 1/lambda follows eq. 5 every step.

    lambda_0 = 1 (beta_init = 1) and no initial phase (decision 5).
    """

    name = "geco"

    def __init__(
        self, kappa: float = 0.02, nu: float = 5.0, alpha: float = 0.99, beta_init: float = 1.0
    ) -> None:
        _check_number("beta_init", beta_init, low=0.0, low_open=True)
        super().__init__(beta_init, train_prior=True, kappa=kappa, alpha=alpha, plateau_steps=0)
        _check_number("nu", nu, low=0.0, low_open=True)
        self.nu = float(nu)

    def update(self, c_hat: float) -> None:
        assert self.kappa_sq is not None
        self.beta = geco_beta_update(self.beta, c_hat - self.kappa_sq, self.nu)
