"""Every option of every config group composes and runs one `fast_dev_run` step."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhp_lightning.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("dataset", "model", "optim", "trainer", "logger", "callbacks", "experiment")

# Options that need something besides the pendulum default to run (extra overrides).
PAIRED: dict[tuple[str, str], list[str]] = {}
# Options that cannot run on a CPU-only machine (composition is still tested).
COMPOSE_ONLY: set[tuple[str, str]] = set()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_option_composes_and_runs_fast_dev_run(compose_cfg, group: str, option: str) -> None:
    overrides = [f"{group}={option}", *PAIRED.get((group, option), [])]
    cfg = compose_cfg(*overrides, "trainer.fast_dev_run=true", tiny=group != "model")
    if (group, option) in COMPOSE_ONLY:
        return
    train(cfg)


def test_default_config_is_the_paper_pendulum_setting(compose_cfg) -> None:
    cfg = compose_cfg(tiny=False)
    assert cfg.model._target_ == "vhp_lightning.models.vhp.VHP"
    assert cfg.model.encoder.hidden == [256, 256, 256, 256] and cfg.model.encoder.out_dim == 2
    assert cfg.model.likelihood._target_.endswith("GaussianLikelihood")
    assert cfg.optim.scheme.kappa == 0.02 and cfg.optim.scheme.nu == 5.0
    assert cfg.optim.optimizer.lr == 1e-4 and cfg.model.n_importance == 16
    assert cfg.dataset.n_samples == 15000


def test_explicit_override_beats_dataset_default(compose_cfg) -> None:
    cfg = compose_cfg("optim.kappa=0.05", "paper.lr=3e-4", tiny=False)
    assert cfg.optim.scheme.kappa == 0.05 and cfg.optim.optimizer.lr == 3e-4
