"""The shipped pendulum default: a sigma learned from 1 (decision 15) keeps the beta = 1 posterior
collapsed early on, as the fixed sigma = 1 of decision 12 does (Fig. 11), while a sigma learned
from 0.1 forms the latent at once; and REWO leaves its initial phase at the documented step."""

from __future__ import annotations

import csv

import pytest

from vhp_lightning.train import train

# App. F nets and the full pendulum data; a short budget, no figures, no test pass.
SHORT = [
    "optim=elbo",
    "trainer.max_steps=250",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
    "logger=none",
    "test=false",
]


@pytest.mark.parametrize(
    ("overrides", "sigma", "collapsed"),
    [
        ([], None, True),
        (["paper/likelihood=gaussian_sigma1"], 1.0, True),
        (["paper.likelihood.init_sigma=0.1"], None, False),
    ],
    ids=["shipped-learned-from-1", "fixed-sigma-1", "learned-from-0.1"],
)
def test_beta_one_under_each_likelihood_reading(compose_cfg, overrides, sigma, collapsed) -> None:
    # With sigma at (or starting from) 1, beta = 1 (VHP*) leaves q(z|x) at the prior -- no
    # information in z, reconstructions at the mean image (RMSE ~0.19) -- as the paper's Fig. 11
    # shows. A sigma learned from 0.1 weights the reconstruction ~50-fold more from the start:
    # the latent forms within a few hundred steps.
    cfg = compose_cfg(*SHORT, *overrides, tiny=False)
    assert cfg.model.likelihood.sigma == sigma
    metrics = train(cfg)
    if collapsed:
        assert metrics["val/kl"] < 0.3 and metrics["val/rmse"] > 0.15
    else:
        assert metrics["val/kl"] > 2.0 and metrics["val/rmse"] < 0.17


@pytest.mark.slow
def test_the_default_run_switches_at_the_documented_step(compose_cfg, tmp_path) -> None:
    """README: REWO leaves its initial phase at step 877 in the default run (seed 0, one thread)."""
    cfg = compose_cfg(
        "trainer.max_steps=900", "trainer.enable_progress_bar=false", "callbacks=none",
        "logger=csv", "test=false", "trainer.check_val_every_n_epoch=1000", tiny=False,
    )  # fmt: skip
    train(cfg)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        phase = [(int(r["step"]), r["rewo/train_prior"]) for r in csv.DictReader(f)]
    first = next(step for step, on in phase if on and float(on) == 1.0)
    assert first == 877
