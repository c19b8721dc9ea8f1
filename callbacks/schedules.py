"""Fixed beta schedules: linear KL warm-up (WU20/WU200 of Table 1) and the plain ELBO (VHP*)."""

from __future__ import annotations

from vhp_lightning.callbacks.base import BetaScheme, _check_number


def warmup_beta(step: int, warmup_steps: int, beta_init: float = 0.0) -> float:
    """Linear warm-up: beta_init at step 0, 1 from ``warmup_steps`` on (Sønderby et al. 2016)."""
    if warmup_steps <= 0:
        return 1.0
    return beta_init + (1.0 - beta_init) * min(1.0, step / warmup_steps)


class WarmUp(BetaScheme):
    """beta rises linearly from ``beta_init`` to 1 over ``warmup_epochs`` epochs; all parameters
    are trained from the first step. The constraint is only logged (no kappa)."""

    name = "warmup"

    def __init__(self, warmup_epochs: float = 20, beta_init: float = 0.0, alpha: float = 0.99):
        _check_number("beta_init", beta_init, low=0.0, high=1.0)
        _check_number("warmup_epochs", warmup_epochs, low=0.0)
        super().__init__(beta_init, train_prior=True, kappa=None, alpha=alpha)
        self.beta_init, self.warmup_epochs = float(beta_init), float(warmup_epochs)

    def update(self, c_hat: float) -> None:
        steps = round(self.warmup_epochs * self.steps_per_epoch)
        self.beta = warmup_beta(self.step + 1, steps, self.beta_init)


class ConstantBeta(BetaScheme):
    """A fixed beta (1 = the ELBO, the paper's VHP*); all parameters trained from the start."""

    name = "elbo"

    def __init__(self, beta: float = 1.0, alpha: float = 0.99) -> None:
        _check_number("beta", beta, low=0.0, low_open=True)
        super().__init__(beta, train_prior=True, kappa=None, alpha=alpha)

    def update(self, c_hat: float) -> None:
        """beta never changes."""
