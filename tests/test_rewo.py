"""REWO (Alg. 1, eq. 11-12): the update rule against hand-computed values, and the callback."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vhp_lightning.callbacks.base import LOG_BETA_MIN
from vhp_lightning.callbacks.rewo import REWO, rewo_beta_update


def test_rewo_update_hand_computed() -> None:
    # satisfied: beta * exp(nu * tanh(tau (beta - 1)) * delta) = 0.5 exp(5 tanh(-1.5) (-0.01))
    assert rewo_beta_update(0.5, -0.01, nu=5.0, tau=3.0) == pytest.approx(0.5231485777021941)
    # violated: GECO's rule, beta * exp(-nu * delta) = 0.5 exp(-0.05)
    assert rewo_beta_update(0.5, 0.01, nu=5.0, tau=3.0) == pytest.approx(0.475614712250357)


def test_rewo_update_edge_cases() -> None:
    assert rewo_beta_update(0.3, 0.0, nu=5.0, tau=3.0) == 0.3  # constraint exactly met
    assert rewo_beta_update(1.0, -0.5, nu=5.0, tau=3.0) == 1.0  # beta at 1 stays at 1
    tiny = rewo_beta_update(1e-4, 1e6, nu=5.0, tau=3.0)  # huge violation: no underflow to 0
    assert tiny > 0 and math.isfinite(tiny) and tiny == pytest.approx(math.exp(LOG_BETA_MIN))
    # a step so large that the raw rule would overshoot 1 is clamped at 1
    assert rewo_beta_update(0.99, -100.0, nu=50.0, tau=3.0) == 1.0


def test_rewo_moves_beta_towards_one_and_never_past() -> None:
    beta, trace = 1e-3, []
    for _ in range(20_000):
        beta = rewo_beta_update(beta, -4e-4, nu=5.0, tau=3.0)
        trace.append(beta)
    assert all(b2 >= b1 for b1, b2 in zip(trace, trace[1:], strict=False))
    assert max(trace) <= 1.0 and trace[-1] > 0.9


class _Module(SimpleNamespace):
    pass


class _Logger:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append((step, dict(metrics)))


class _Trainer(SimpleNamespace):
    """What a scheme reads of the Trainer; ``global_step`` counts optimiser steps, as after the
    module's step of each batch."""

    strategy = SimpleNamespace(reduce=lambda t, reduce_op: t, root_device=torch.device("cpu"))
    num_training_batches = 1
    log_every_n_steps = 1
    current_epoch = 0

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"callback_metrics": {}, "loggers": [], "global_step": 0, **kwargs})


def _run(scheme: REWO, constraints: list[float]) -> tuple[list[float], list[bool]]:
    module, trainer = _Module(beta=1.0, train_prior=True), _Trainer()
    scheme.setup(trainer, module, "fit")  # type: ignore[arg-type]
    scheme.on_train_start(trainer, module)  # type: ignore[arg-type]
    betas, phases = [], []
    for c in constraints:
        trainer.global_step += 1  # the module's optimiser step of this batch
        scheme.on_train_batch_end(trainer, module, {"constraint": torch.tensor(c)}, None, 0)  # type: ignore[arg-type]
        betas.append(module.beta)
        phases.append(module.train_prior)
    return betas, phases


def test_beta_stays_at_beta_init_during_initial_phase() -> None:
    scheme = REWO(kappa=0.1, nu=5.0, alpha=0.0, beta_init=1e-3)  # alpha=0: C_t = C_ba
    betas, phases = _run(scheme, [0.5, 0.3, 0.2, 0.011, 0.005, 0.005, 0.02, 0.02])
    assert betas[:4] == [1e-3] * 4 and phases[:4] == [False] * 4
    assert phases[4:] == [True] * 4  # switch at C_t = 0.005 < kappa^2 = 0.01 ...
    assert scheme.switch_step == 4
    assert betas[4] > 1e-3 and betas[5] > betas[4]  # ... beta grows while satisfied
    assert betas[6] < betas[5] and betas[7] < betas[6]  # ... shrinks while violated
    assert phases[-1]  # and the main phase never ends


def test_running_average_follows_alg1() -> None:
    scheme = REWO(kappa=0.01, alpha=0.9)
    _run(scheme, [1.0, 0.0])
    assert scheme.c_hat == pytest.approx(0.9)  # C_0 = C_ba = 1, then 0.1 * 0 + 0.9 * 1


def test_state_dict_round_trip() -> None:
    a = REWO(kappa=0.1, alpha=0.0)
    _run(a, [0.5, 0.001, 0.001])
    b = REWO(kappa=0.1, alpha=0.0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert b.state_dict()["train_prior"] is True and b.state_dict()["switch_step"] == 1


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"kappa": 0.0}, ValueError, "optim.kappa must satisfy 0.0 < kappa"),
        ({"kappa": -1}, ValueError, "optim.kappa must satisfy"),
        ({"kappa": "abc"}, TypeError, "optim.kappa must be a number, got 'abc'"),
        ({"nu": 0}, ValueError, "optim.nu must satisfy"),
        ({"alpha": 1.0}, ValueError, "optim.alpha must satisfy"),
        ({"beta_init": 2.0}, ValueError, "optim.beta_init must satisfy"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        REWO(**kwargs)


def test_module_without_protocol_is_refused() -> None:
    with pytest.raises(TypeError, match="lacks attribute\\(s\\) beta, train_prior"):
        REWO().setup(_Trainer(), object(), "fit")  # type: ignore[arg-type]


def test_missing_constraint_output_is_refused() -> None:
    scheme, module = REWO(), _Module(beta=1.0, train_prior=True)
    with pytest.raises(KeyError, match="return a dict with key 'constraint'"):
        scheme.on_train_batch_end(_Trainer(), module, {"loss": 1.0}, None, 0)  # type: ignore[arg-type]


def test_plateau_above_kappa_warns_once() -> None:
    scheme = REWO(kappa=0.01, alpha=0.0, plateau_steps=10)
    with pytest.warns(UserWarning, match="kappa may be too tight"):
        _run(scheme, [0.5] * 12)


def test_scheme_writes_each_step_to_the_loggers_and_callback_metrics() -> None:
    """beta, C_t, kappa^2 and the phase go straight to every logger, one row per step numbered
    from 0 with the epoch, every ``log_every_n_steps`` steps; the latest are in
    ``callback_metrics`` (the progress line and train()'s result read them there)."""
    scheme = REWO(kappa=0.1, nu=5.0, alpha=0.0, beta_init=1e-3)
    logger = _Logger()
    module, trainer = _Module(beta=1.0, train_prior=True), _Trainer(loggers=[logger])
    scheme.on_train_start(trainer, module)  # type: ignore[arg-type]
    for step, c in enumerate([0.5, 0.005, 0.005]):
        trainer.global_step += 1
        trainer.current_epoch = step
        scheme.on_train_batch_end(trainer, module, {"constraint": torch.tensor(c)}, None, 0)  # type: ignore[arg-type]
    assert [s for s, _ in logger.rows] == [0, 1, 2]
    assert logger.rows[0][1] == {
        "rewo/beta": 1e-3,
        "rewo/train_prior": 0.0,
        "rewo/c_hat": 0.5,
        "rewo/kappa_sq": pytest.approx(0.01),
        "epoch": 0,
    }
    assert logger.rows[2][1]["epoch"] == 2 and logger.rows[2][1]["rewo/train_prior"] == 1.0
    assert trainer.callback_metrics == {k: v for k, v in logger.rows[2][1].items() if k != "epoch"}
    trainer.log_every_n_steps = 2
    for _ in range(4):
        trainer.global_step += 1
        scheme.on_train_batch_end(trainer, module, {"constraint": torch.tensor(0.005)}, None, 0)  # type: ignore[arg-type]
    assert [s for s, _ in logger.rows] == [0, 1, 2, 4, 6]
