"""Sweeps: the Optuna sweeper and the SLURM launcher configs compose (and Optuna runs) when the
sweep extra is installed. Multirun logs per job: tests/test_train.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra


def _compose(*overrides: str):  # type: ignore[no-untyped-def]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_optuna_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose("hparams_search=optuna")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "minimize"
    assert set(cfg.hydra.sweeper.params) == {"optim.kappa", "optim.optimizer.lr"}
    assert cfg.hydra.mode.name == "MULTIRUN"


def test_slurm_launcher_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min == 720
    assert launcher.partition == "gpu" and launcher.tasks_per_node == 1


@pytest.mark.slow
def test_optuna_runs_two_trials_and_minimises_val_loss(run_cli, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={tmp_path}",
        "logger=csv",
        cwd=tmp_path,
        tiny=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optim.kappa", "optim.optimizer.lr"}
    assert isinstance(result["best_value"], float)
    assert (tmp_path / "0" / "csv" / "metrics.csv").is_file()
    assert (tmp_path / "1" / "csv" / "metrics.csv").is_file()
