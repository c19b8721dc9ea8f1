"""Sweeps: a multirun gives each job its own W&B offline run and CSV log; the Optuna sweeper and
the SLURM launcher configs compose (and Optuna runs) when the sweep extra is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]
TINY_CLI = [
    "dataset.n_samples=300",
    "dataset.n_val=50",
    "dataset.n_test=50",
    "dataset.batch_size=50",
    "model.encoder.hidden=[16]",
    "model.decoder.hidden=[16]",
    "model.prior_encoder.hidden=[16]",
    "model.prior_decoder.hidden=[16]",
    "paper.n_importance=2",
    "trainer.max_steps=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
    "test=false",
]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "vhp_lightning.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _compose(*overrides: str):  # type: ignore[no-untyped-def]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_multirun_jobs_each_get_their_own_wandb_run_and_csv(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    proc = _cli(
        "-m",
        "optim.kappa=0.02,0.05",
        "logger=[csv,wandb]",
        f"hydra.sweep.dir={tmp_path}",
        *TINY_CLI,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = []
    for job in ("0", "1"):
        assert (tmp_path / job / "csv" / "metrics.csv").is_file()
        (run,) = (tmp_path / job / "wandb").glob("offline-run-*")  # exactly one run per job
        runs.append(run.name)
    assert runs[0] != runs[1]
    assert "optim.kappa=0.05" in (tmp_path / "1" / ".hydra" / "overrides.yaml").read_text()


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
def test_optuna_runs_two_trials_and_minimises_val_loss(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = _cli(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={tmp_path}",
        "logger=csv",
        *TINY_CLI,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optim.kappa", "optim.optimizer.lr"}
    assert isinstance(result["best_value"], float)
    assert (tmp_path / "0" / "csv" / "metrics.csv").is_file()
    assert (tmp_path / "1" / "csv" / "metrics.csv").is_file()
