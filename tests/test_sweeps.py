"""Sweeps: the Optuna sweeper and the SLURM and parallel launcher configs compose when the sweep
extra is installed; the documented Optuna command runs with its sqlite storage and minimises
`optimized_metric`; the parallel launcher runs the jobs of a multirun in worker processes; the
W&B runs of a multirun are named by their overrides and grouped by the sweep dir. Without the
sweep extra (CI installs `.[dev]` only) the plugin tests skip. Multirun logs per job:
tests/test_train.py."""

from __future__ import annotations

import csv
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
    assert cfg.optimized_metric == "val/loss"


def test_slurm_launcher_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min == 720
    assert launcher.partition == "gpu" and launcher.tasks_per_node == 1


def test_parallel_launcher_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    launcher = _compose("hydra/launcher=parallel").hydra.launcher
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert launcher.n_jobs == -1  # one job per core
    assert int(launcher.batch_size) == 1


def _last_logged(csv_path: Path, key: str) -> float:
    """The last value of ``key`` in a run's ``csv/metrics.csv``."""
    with csv_path.open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)][-1]


@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna 2.x, SQLAlchemy 1.4
def test_optuna_sqlite_storage_keeps_the_study(run_cli, tmp_path: Path) -> None:
    """docs/cluster.md's `hparams_search=optuna hydra.sweeper.storage=sqlite:///optuna.db`: two
    trials, each a complete run that returns val/loss; the same command again adds its trials to
    the stored study. (optuna 2.10 under SQLAlchemy 2 ended here in an AssertionError: the sweep
    extra pins sqlalchemy<2.)"""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna

    first, second = tmp_path / "first", tmp_path / "second"
    for sweep_dir, n_trials in ((first, 2), (second, 1)):
        proc = run_cli(
            "hparams_search=optuna",
            "hydra.sweeper.storage=sqlite:///optuna.db",  # relative: in the command's folder
            f"hydra.sweeper.n_trials={n_trials}",
            "logger=csv",
            f"hydra.sweep.dir={sweep_dir}",
            cwd=tmp_path,
            tiny=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optim.kappa", "optim.optimizer.lr"}
    returned = [_last_logged(first / j / "csv" / "metrics.csv", "val/loss") for j in ("0", "1")]
    assert result["best_value"] == pytest.approx(min(returned))
    study = optuna.load_study(study_name="vhp-kappa-lr", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # 2 + 1 added by the rerun
    assert sorted(t.value for t in study.trials[:2]) == pytest.approx(sorted(returned))


def test_optuna_minimises_optimized_metric(run_sweep, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    run_sweep(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "optimized_metric=val/loss_beta",
        "logger=csv",
        sweep_dir=tmp_path,
    )
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    metrics = tmp_path / "0" / "csv" / "metrics.csv"
    assert result["best_value"] == pytest.approx(_last_logged(metrics, "val/loss_beta"))
    assert result["best_value"] != pytest.approx(_last_logged(metrics, "val/loss"))


# A Hydra callback that records which process ran the sweep and which ran each job.
PID_CALLBACK = """
import os
from pathlib import Path

from hydra.experimental.callback import Callback


class RecordPids(Callback):
    def on_multirun_start(self, config, **kwargs):
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        Path(config.hydra.sweep.dir, "launcher.pid").write_text(str(os.getpid()))

    def on_job_start(self, config, **kwargs):
        Path(config.hydra.runtime.output_dir, "job.pid").write_text(str(os.getpid()))
"""


def test_parallel_launcher_runs_jobs_in_worker_processes(
    run_sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "record_pids.py").write_text(PID_CALLBACK)
    monkeypatch.setenv("PYTHONPATH", str(plugins))  # the sweep and its loky workers import it
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    run_sweep(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "optim.kappa=0.02,0.05",
        "test=false",
        "+hydra.callbacks.pids._target_=record_pids.RecordPids",
        sweep_dir=sweep_dir,
    )
    launcher = int((sweep_dir / "launcher.pid").read_text())
    pids = []
    for job, kappa in (("0", "0.02"), ("1", "0.05")):
        run = sweep_dir / job
        pids.append(int((run / "job.pid").read_text()))
        assert f"optim.kappa={kappa}" in (run / ".hydra" / "overrides.yaml").read_text()
        assert (run / ".hydra" / "config.yaml").is_file()
        assert _last_logged(run / "csv" / "metrics.csv", "val/loss") > 0
        log = (run / "train.log").read_text()
        assert "torch: 1 CPU thread(s)" in log  # one thread per job
        assert "Finished at step 4" in log
    assert launcher not in pids and pids[0] != pids[1], (launcher, pids)


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


@pytest.mark.parametrize(
    ("target", "job", "devices", "accelerator", "gpus", "want"),
    [
        ("hydra_plugins.hydra_joblib_launcher.JoblibLauncher", 5, 1, "auto", 4, [1]),
        ("hydra_plugins.hydra_joblib_launcher.JoblibLauncher", 3, 1, "gpu", 4, [3]),
        ("hydra_plugins.hydra_joblib_launcher.JoblibLauncher", 5, 1, "auto", 1, None),  # one GPU
        ("hydra_plugins.hydra_joblib_launcher.JoblibLauncher", 5, 2, "auto", 4, None),  # DDP job
        ("hydra_plugins.hydra_joblib_launcher.JoblibLauncher", 5, 1, "cpu", 4, None),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", 5, 1, "auto", 4, None),
    ],
)
def test_parallel_jobs_take_one_gpu_each(target, job, devices, accelerator, gpus, want) -> None:
    """hydra/launcher=parallel on G GPUs: job k on GPU k mod G (round-robin), only for one-device
    jobs of the joblib launcher on a GPU accelerator."""
    from vhp_lightning.runs.preflight import job_gpus

    assert job_gpus(target, job, devices, accelerator, gpus) == want
