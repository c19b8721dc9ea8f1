"""The opt-in torch.compile of the training loss (config key ``compile``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vhp_lightning.train import train


def _train(compose_cfg, run: Path, *overrides: str) -> dict[str, float]:
    # REWO with kappa = 1: the main phase (both optimisers, beta changing every step) from step 1.
    # Returns the final validation metrics (beta = 1 bound and its parts on the whole split).
    return train(compose_cfg("optim.kappa=1.0", "test=false", *overrides, run_dir=run))


def test_compiled_loss_trains_exactly_like_eager(compose_cfg, tmp_path: Path) -> None:
    # Dynamo's "eager" backend runs the captured graph with the same kernels and the same random
    # draws, so any difference would come from our wiring (beta passed as a tensor, the parts
    # returned by the compiled function): after 20 steps, every validation number and the final
    # beta must be the same floats.
    from torch._dynamo.utils import counters

    eager = _train(compose_cfg, tmp_path / "eager")
    torch._dynamo.reset()
    counters.clear()
    compiled = _train(compose_cfg, tmp_path / "compiled", "compile=eager")
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled loss really ran
    assert {"val/loss", "val/kl", "rewo/beta"} <= eager.keys()
    assert compiled == eager


@pytest.mark.slow
def test_inductor_compiles_once_while_beta_changes(compose_cfg, tmp_path: Path) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    metrics = _train(compose_cfg, tmp_path / "inductor", "compile=inductor")
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    # One graph for the training loss despite 20 different beta values.
    assert counters["stats"]["unique_graphs"] <= 2
