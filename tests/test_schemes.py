"""GECO, the App. B.1 scheme, warm-up and constant beta: update rules and callback behaviour."""

from __future__ import annotations

import math

import pytest

from tests.test_rewo import _run
from vhp_lightning.callbacks.base import LOG_BETA_MAX, LOG_BETA_MIN
from vhp_lightning.callbacks.geco import GECO, geco_beta_update
from vhp_lightning.callbacks.rewo_alt import REWOAlt, rewo_alt_update
from vhp_lightning.callbacks.schedules import ConstantBeta, WarmUp, warmup_beta


def test_geco_update_hand_computed() -> None:
    assert geco_beta_update(0.5, 0.01, nu=5.0) == pytest.approx(0.475614712250357)
    assert geco_beta_update(0.5, -0.01, nu=5.0) == pytest.approx(0.5256355481880121)
    assert geco_beta_update(0.5, 0.0, nu=5.0) == 0.5  # constraint exactly met


def test_geco_is_unbounded_above_one_but_finite() -> None:
    assert geco_beta_update(1.0, -0.1, nu=5.0) == pytest.approx(math.exp(0.5))  # passes 1
    huge = geco_beta_update(1.0, -1e9, nu=5.0)
    assert math.isfinite(huge) and huge == pytest.approx(math.exp(LOG_BETA_MAX))
    tiny = geco_beta_update(1.0, 1e9, nu=5.0)
    assert tiny > 0 and tiny == pytest.approx(math.exp(LOG_BETA_MIN))


def test_geco_trains_prior_from_the_first_step() -> None:
    betas, phases = _run(GECO(kappa=0.1, alpha=0.0), [0.001, 0.001, 0.5])
    assert all(phases) and betas[1] > betas[0] > 1.0 and betas[2] < betas[1]


def test_rewo_alt_update_hand_computed() -> None:
    log_gamma, beta = rewo_alt_update(math.log(2.0), 0.01, nu=5.0, tau=3.0)
    assert math.exp(log_gamma) == pytest.approx(2.1025421927520482)
    assert beta == pytest.approx(0.13684333610799185)
    _, same = rewo_alt_update(math.log(2.0), 0.0, nu=5.0, tau=3.0)  # constraint met
    assert same == pytest.approx(1 / 7)


def test_rewo_alt_edge_cases_stay_in_unit_interval() -> None:
    _, low = rewo_alt_update(0.0, 1e9, nu=5.0, tau=3.0)
    _, high = rewo_alt_update(0.0, -1e9, nu=5.0, tau=3.0)
    assert low == pytest.approx(math.exp(LOG_BETA_MIN))  # tiny, finite, > 0
    assert high <= 1.0 and high == pytest.approx(1.0)


def test_rewo_alt_starts_at_beta_init_and_keeps_initial_phase() -> None:
    scheme = REWOAlt(kappa=0.1, alpha=0.0, beta_init=1e-3)
    betas, phases = _run(scheme, [0.5, 0.5, 0.001, 0.001])
    assert betas[:2] == [1e-3, 1e-3] and phases == [False, False, True, True]
    assert betas[3] > betas[2] > 1e-3 and max(betas) < 1.0
    restored = REWOAlt(kappa=0.1)
    restored.load_state_dict(scheme.state_dict())
    assert restored.log_gamma == scheme.log_gamma and restored.beta == scheme.beta


def test_warmup_is_linear_and_reaches_one() -> None:
    assert warmup_beta(0, 100) == 0.0
    assert warmup_beta(25, 100) == 0.25
    assert warmup_beta(50, 100, beta_init=0.2) == pytest.approx(0.6)
    assert warmup_beta(1000, 100) == 1.0 and warmup_beta(5, 0) == 1.0
    scheme = WarmUp(warmup_epochs=2)
    scheme.steps_per_epoch = 2  # 4 warm-up steps
    betas, phases = _run(scheme, [0.3] * 6)
    assert all(phases)
    # _run re-reads steps_per_epoch from its stand-in trainer (1 batch per epoch): 2 steps
    assert betas == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_constant_beta_is_the_elbo() -> None:
    betas, phases = _run(ConstantBeta(), [0.3, 0.1, 5.0])
    assert betas == [1.0, 1.0, 1.0] and all(phases)
    with pytest.raises(ValueError, match="optim.beta must satisfy"):
        ConstantBeta(beta=0.0)
