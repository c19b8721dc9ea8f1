"""Lightning's and lightning-hydra-template's conventions: ``VHPModule.load_from_checkpoint``,
``tags``, the ``debug`` config group."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vhp_lightning.io.checkpoint import load_checkpoint
from vhp_lightning.module import VHPModule
from vhp_lightning.train import train

RUN = ["callbacks=default", "~callbacks.progress_bar", "callbacks.figures=null", "test=false"]


def test_load_from_checkpoint_rebuilds_the_module_safely(compose_cfg, tmp_path) -> None:
    train(compose_cfg(*RUN, "trainer.max_steps=6", "nll_samples=7", run_dir=tmp_path))
    path = tmp_path / "checkpoints" / "last.ckpt"
    module = VHPModule.load_from_checkpoint(path)
    stored = load_checkpoint(path)
    weights = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    assert weights.keys() == {k for k in stored["state_dict"] if k.startswith("model.")}
    assert all(torch.equal(v, stored["state_dict"][k]) for k, v in weights.items())
    assert (module.beta, module.train_prior) == (
        stored["vhp_beta"]["beta"],
        stored["vhp_beta"]["train_prior"],
    )
    assert module.nll_samples == 7 and not module.training
    assert VHPModule.load_from_checkpoint(path, nll_samples=3).nll_samples == 3
    with pytest.raises(RuntimeError, match="to continue training run python -m vhp_lightning"):
        module.configure_optimizers()


def test_tags_default_to_the_choices_and_reach_wandb(compose_cfg) -> None:
    cfg = compose_cfg("logger=wandb")
    assert list(cfg.tags) == ["pendulum", "vhp", "rewo"]
    assert list(cfg.logger.wandb.tags) == ["pendulum", "vhp", "rewo"]
    cfg = compose_cfg("logger=wandb", "tags=[ablation,kappa]")
    assert list(cfg.logger.wandb.tags) == ["ablation", "kappa"]


def test_debug_tiny_is_the_test_suites_tiny_setting(compose_cfg) -> None:
    """``debug=tiny`` gives a user the unit tests' tiny run in one override (tests/conftest.py)."""
    tiny = OmegaConf.to_container(compose_cfg(tiny=True), resolve=True)
    debug = OmegaConf.to_container(compose_cfg("debug=tiny", tiny=False), resolve=True)
    assert isinstance(tiny, dict) and isinstance(debug, dict)
    for section in ("dataset", "model", "trainer", "callbacks", "logger"):
        assert debug[section] == tiny[section], section
    assert compose_cfg("debug=fdr", tiny=False).trainer.fast_dev_run is True
