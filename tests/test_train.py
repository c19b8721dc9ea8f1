"""End to end through the real configs: train, resume, loggers, sweeps and bad input."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException

from vhp_lightning.io.checkpoint import CheckpointError, load_checkpoint
from vhp_lightning.io.schema import ConfigError
from vhp_lightning.train import train

REPO = Path(__file__).resolve().parents[1]


def test_default_run_writes_checkpoint_and_csv(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "callbacks=default",
        "~callbacks.progress_bar",
        "callbacks.model_checkpoint.every_n_train_steps=null",
        "callbacks.model_checkpoint.every_n_epochs=1",
    )
    metrics = train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert "test/loss" in metrics and "val/loss" in metrics
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    for column in ("rewo/beta", "rewo/c_hat", "rewo/kappa_sq", "rewo/train_prior", "train/loss"):
        assert column in header


def test_checkpoint_loads_weights_only_and_carries_scheme_state(compose_cfg, tmp_path) -> None:
    train(compose_cfg("callbacks=default", "~callbacks.progress_bar"))
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # weights_only=True inside
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("REWO")]
    assert set(state) >= {"beta", "c_hat", "train_prior", "step"}
    assert state["step"] == 20
    assert ckpt["vhp_config"]["optim"]["scheme"]["kappa"] == 0.02


def _run_to(compose_cfg, run_dir: Path, steps: int, *extra: str) -> dict:
    cfg = compose_cfg(
        "callbacks=default",
        "~callbacks.progress_bar",
        "callbacks.model_checkpoint.every_n_train_steps=null",
        "callbacks.model_checkpoint.every_n_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "test=false",
        f"trainer.max_steps={steps}",
        "optim.kappa=0.3",  # reachable within a few steps: the run crosses the phase switch
        *extra,
        run_dir=run_dir,
    )
    train(cfg)
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("optimizer", ["adam", "adam_fused"])
def test_resume_equals_uninterrupted_run_bitwise(compose_cfg, tmp_path: Path, optimizer) -> None:
    """N steps, stop, resume from last.ckpt to 2N == 2N steps straight (N = 2 epochs of 8), with
    each shipped optimiser (conf/optim/optimizer/)."""
    n, opt = 16, f"optim/optimizer={optimizer}"
    full = _run_to(compose_cfg, tmp_path / "full", 2 * n, opt)
    _run_to(compose_cfg, tmp_path / "half", n, opt)
    resumed = _run_to(
        compose_cfg,
        tmp_path / "resumed",
        2 * n,
        opt,
        f"ckpt_path={tmp_path / 'half' / 'checkpoints' / 'last.ckpt'}",
    )
    fused = full["optimizer_states"][0]["param_groups"][0]["fused"]
    assert bool(fused) is (optimizer == "adam_fused")
    assert resumed["global_step"] == full["global_step"] == 2 * n
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for opt_full, opt_res in zip(
        full["optimizer_states"], resumed["optimizer_states"], strict=True
    ):
        for pid, st in opt_full["state"].items():
            for name, tensor in st.items():
                assert torch.equal(tensor, opt_res["state"][pid][name]), (pid, name)
    scheme = [k for k in full["callbacks"] if k.startswith("REWO")][0]
    assert full["callbacks"][scheme] == resumed["callbacks"][scheme]
    assert full["callbacks"][scheme]["train_prior"]  # the phase switch happened in both


def test_wandb_offline_runs_without_prompt_and_finishes(compose_cfg, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(compose_cfg("logger=wandb", "trainer.max_steps=3"))
    assert wandb.run is None  # wandb.finish() ran, so the next multirun job gets its own run
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        (["optim=rewoo"], ConfigCompositionException, "Available options in 'optim'"),
        (["dataset=mnsit"], ConfigCompositionException, "Available options in 'dataset'"),
        (["optim.kappa=abc"], ConfigError, r"optim.kappa: input should be a valid number.*'abc'"),
        (["optim.kappa=0"], ConfigError, r"optim.kappa: input should be greater than 0 \(got 0"),
        (["optim.kappa=-0.1"], ConfigError, "optim.kappa: input should be greater than 0"),
        (["trainer.max_steps=1.5"], ConfigError, r"trainer.max_steps: .*valid integer \(got 1.5\)"),
        (["dataset.batch_size=0"], ConfigError, "dataset.batch_size: .*greater than or equal to 1"),
        (["optim.optimizer.lr=inf"], ConfigError, "optim.optimizer.lr: input should be a finite"),
        (["test=yes"], ConfigError, r"test: input should be a valid boolean \(got 'yes'\)"),
        (["dataset.num_workers=-1"], ConfigError, "dataset.num_workers: .*greater than or equal"),
        (["ckpt_path=/nonexistent/last.ckpt"], CheckpointError, "checkpoint not found"),
        (["model.prior_bound=iww"], InstantiationException, "Choose one of: iw, elbo"),
        (["dataset.data_shape=[1,16,15]"], InstantiationException, "data_shape must be"),
    ],
)
def test_bad_input_fails_early_with_a_clear_message(compose_cfg, overrides, error, match) -> None:
    with pytest.raises(error, match=match):
        train(compose_cfg(*overrides))


def test_corrupt_checkpoint_is_refused(compose_cfg, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(compose_cfg(f"ckpt_path={bad}"))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)


def test_multirun_two_jobs_each_with_own_logs(run_sweep, tmp_path: Path) -> None:
    """-m with two jobs: each has its own CSV log, TensorBoard events and W&B offline run."""
    logger = "logger=[csv,tensorboard,wandb]"
    run_sweep("-m", "optim.kappa=0.02,0.05", logger, "test=false", sweep_dir=tmp_path)
    runs = []
    for job in ("0", "1"):
        assert (tmp_path / job / "csv" / "metrics.csv").is_file()
        assert list((tmp_path / job / "tensorboard").glob("events.*"))
        (run,) = (tmp_path / job / "wandb").glob("offline-run-*")  # exactly one run per job
        runs.append(run.name)
    assert runs[0] != runs[1]
    assert "optim.kappa=0.05" in (tmp_path / "1" / ".hydra" / "overrides.yaml").read_text()


def test_cli_unknown_option_lists_valid_ones(run_cli, tmp_path: Path) -> None:
    proc = run_cli("optim=rewoo", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'optim/rewoo'" in proc.stderr and "rewo" in proc.stderr


def test_initial_phase_warning_only_when_rewo_never_switched() -> None:
    from vhp_lightning.callbacks.geco import GECO
    from vhp_lightning.callbacks.rewo import REWO
    from vhp_lightning.runs.summary import initial_phase_warning

    rewo = REWO(kappa=0.02)
    rewo.c_hat = 0.0118
    text = initial_phase_warning(rewo)
    assert text and "C_t = 0.0118" in text and "kappa^2 = 0.0004" in text
    assert "optim.kappa" in text and "trainer.max_steps" in text
    rewo.update(1e-4)  # below kappa^2: the main phase starts
    assert rewo.train_prior and initial_phase_warning(rewo) is None
    assert initial_phase_warning(GECO(kappa=0.02)) is None


def test_table1_elbo_prior_row_trains(compose_cfg) -> None:
    # Table 1's App. B.4 row (+table1=rewo_elbo_prior) executed, not only composed: REWO with
    # kappa = 1 (main phase from step 1, so the second layer trains under the ELBO bound).
    cfg = compose_cfg("+table1=rewo_elbo_prior", "optim.kappa=1.0", "test=false")
    assert cfg.model.prior_bound == "elbo" and cfg.optim.scheme._target_.endswith("REWO")
    metrics = train(cfg)
    assert metrics["rewo/train_prior"] == 1.0 and 1e-4 < metrics["rewo/beta"] <= 1.0
    assert all(math.isfinite(metrics[k]) for k in ("val/loss", "val/kl", "val/log_p_z"))


def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path: Path) -> None:
    """``vhp_lightning.load("README.md")``: not 'unsafe pickled objects' but 'not a checkpoint'."""
    from vhp_lightning.api import load

    text = tmp_path / "README.md"
    text.write_text("# a readme\n")
    with pytest.raises(CheckpointError, match=r"is not a checkpoint file \(it starts with b'# a "):
        load(text)
