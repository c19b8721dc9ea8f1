"""The alternative beta-update of App. B.1 (eq. 14-15), with REWO's initial phase."""

from __future__ import annotations

import math
from typing import Any

from vhp_lightning.callbacks.base import clamp_log_beta
from vhp_lightning.callbacks.rewo import REWO

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


class REWOAlt(REWO):
    """Initial phase as in REWO (Alg. 1), then beta = 1 / (1 + tau * gamma) (App. B.1).

    Takes REWO's arguments (``kappa, nu, tau, alpha, beta_init, plateau_steps``), with
    ``beta_init < 1``: gamma_0 = (1 / beta_init - 1) / tau, so beta starts at ``beta_init``.
    """

    name = "rewo_alt"
    beta_init_below_one = True  # gamma_0 > 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_gamma = math.log((1.0 / self.beta - 1.0) / self.tau)

    def main_phase_update(self, delta: float) -> None:
        """gamma and beta of eq. 14-15 from ``delta = C_t - kappa^2``."""
        self.log_gamma, self.beta = rewo_alt_update(self.log_gamma, delta, self.nu, self.tau)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_gamma": self.log_gamma}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.log_gamma = float(state_dict["log_gamma"])
