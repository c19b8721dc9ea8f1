"""Sweeps: the Optuna sweeper and the SLURM launcher configs compose (and Optuna runs) when the
sweep extra is installed; the W&B runs of a multirun are named by their overrides and grouped by
the sweep dir. Multirun logs per job: tests/test_train.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
def test_optuna_runs_two_trials_and_minimises_val_loss(run_sweep, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    run_sweep("hparams_search=optuna", "hydra.sweeper.n_trials=2", "logger=csv", sweep_dir=tmp_path)
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optim.kappa", "optim.optimizer.lr"}
    assert isinstance(result["best_value"], float)
    assert (tmp_path / "0" / "csv" / "metrics.csv").is_file()
    assert (tmp_path / "1" / "csv" / "metrics.csv").is_file()


def _wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``): a 7-byte file
    header, then LevelDB-log chunks (4-byte crc, 2-byte length, 1-byte type) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, pending, block = path.read_bytes(), 7, b"", 32768
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST (FIRST and MIDDLE chunks continue a record)
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_multirun_wandb_runs_named_by_overrides_and_grouped_by_sweep(run_sweep, tmp_path) -> None:
    pytest.importorskip("wandb")
    run_sweep("-m", "optim.kappa=0.02,0.05", "logger=wandb", "test=false", sweep_dir=tmp_path)
    names, groups = [], []
    for job, kappa in (("0", "0.02"), ("1", "0.05")):
        (path,) = (tmp_path / job / "wandb").glob("offline-run-*/run-*.wandb")
        (run,) = [r.run for r in _wandb_records(path) if r.WhichOneof("record_type") == "run"]
        assert run.display_name.startswith("pendulum-vhp-rewo ")
        assert f"optim.kappa={kappa}" in run.display_name
        assert "logger=" not in run.display_name  # where it logs does not name a job
        names.append(run.display_name)
        groups.append(run.run_group)
    assert names[0] != names[1]
    assert groups == [str(tmp_path), str(tmp_path)]
    # the documented sync command finds exactly these runs
    assert len(list(tmp_path.glob("*/wandb/offline-run-*"))) == 2


def test_single_run_wandb_has_no_group(compose_cfg) -> None:
    cfg = compose_cfg("logger=wandb", "optim=geco", "data_dir=/data", tiny=False)
    assert cfg.logger.wandb.group is None
    assert cfg.logger.wandb.name == "pendulum-vhp-geco"  # data_dir, optim=: not in the name
