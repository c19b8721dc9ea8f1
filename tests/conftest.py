"""Shared fixtures: compose the real configs (as `python -m vhp_lightning.train` does)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

# Small pendulum data and nets (the `tiny_nets` fixture; test_examples keeps its checkpoints).
TINY_NETS = [
    "dataset.n_samples=600",
    "dataset.n_val=100",
    "dataset.n_test=100",
    "dataset.batch_size=50",
    "dataset.eval_batch_size=100",
    "paper.nets.encoder.hidden=[32,32]",
    "paper.nets.decoder.hidden=[32,32]",
    "paper.nets.prior_encoder.hidden=[32,32]",
    "paper.nets.prior_decoder.hidden=[32,32]",
    "paper.n_importance=4",
]
# A pendulum setting small enough for unit tests: small nets, few images, a few steps.
TINY = [
    *TINY_NETS,
    "trainer.max_steps=20",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
    "logger=csv",
]


@pytest.fixture
def tiny_nets() -> list[str]:
    """Overrides for small pendulum data and nets only (no trainer/logger/callback changes)."""
    return list(TINY_NETS)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``compose_cfg(*overrides)`` -> the composed train config, run dir = tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vhp_lightning.conf", version_base="1.3"):

        def _compose(*overrides: str, tiny: bool = True, run_dir: Path | None = None) -> DictConfig:
            ovr = [*(TINY if tiny else []), *overrides]
            cfg = compose("train", overrides=ovr, return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = str(run_dir or tmp_path)
                cfg.hydra.job.num = 0
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg

        yield _compose
    GlobalHydra.instance().clear()


# The same tiny setting as command-line overrides, for tests that run the real CLI.
TINY_CLI = [
    "dataset.n_samples=300",
    "dataset.n_val=50",
    "dataset.n_test=50",
    "dataset.batch_size=50",
    "paper.nets.encoder.hidden=[16]",
    "paper.nets.decoder.hidden=[16]",
    "paper.nets.prior_encoder.hidden=[16]",
    "paper.nets.prior_decoder.hidden=[16]",
    "paper.n_importance=2",
    "trainer.max_steps=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
]


def _run_cli(*args: str, cwd: Path, tiny: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m vhp_lightning.train *args`` (plus TINY_CLI if ``tiny``) in ``cwd``."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "vhp_lightning.train", *args, *(TINY_CLI if tiny else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(*overrides, cwd=..., tiny=False)``: the real command line in a subprocess."""
    return _run_cli


def _run_sweep(*args: str, sweep_dir: Path) -> subprocess.CompletedProcess:
    """``python -m vhp_lightning.train *args`` in the tiny setting with its jobs in
    ``sweep_dir/<job number>/`` (pass ``-m`` unless the config is a multirun by itself); it must
    succeed."""
    proc = _run_cli(*args, f"hydra.sweep.dir={sweep_dir}", cwd=sweep_dir, tiny=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def run_sweep() -> Callable[..., subprocess.CompletedProcess]:
    """``run_sweep(*args, sweep_dir=...)``: a tiny multirun of the real command line."""
    return _run_sweep


# Tiny models are faster single-threaded on the 2-core CI machines (less thread contention).
torch.set_num_threads(1)


def staged_data() -> Path:
    """Where the real datasets are staged for the tests that read them: ``$VHP_DATA_DIR``, else
    ``shared/data`` beside the repo (this project's staging area); such tests skip, naming both,
    when the folder they need is absent."""
    env = os.environ.get("VHP_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


STAGED_DATA_HINT = "set VHP_DATA_DIR or stage the data in ../shared/data (see its README)"
