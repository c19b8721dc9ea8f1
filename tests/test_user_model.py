"""REWO drives a user's own LightningModule, not only ours (the protocol of ``callbacks/base.py``).

``UserVAE`` below is what a user writes: a plain VAE with a learned Gaussian prior, automatic
optimisation, nothing imported from our models or module. It follows the ``ConstraintModule``
protocol: it has ``beta`` and ``train_prior``, weights its KL term by ``self.beta``, keeps the
prior fixed while ``train_prior`` is off, and returns the batch's constraint C_ba from
``training_step``. The same code is on ``docs/rewo-in-your-model.md``.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vhp_lightning.bounds import gaussian_log_prob, reparameterize, squared_error_per_pixel
from vhp_lightning.callbacks import REWO, ConstraintModule


class UserVAE(pl.LightningModule):
    """A minimal VAE with a learned prior N(m, diag(exp(s))) that REWO can drive."""

    def __init__(self, data_dim: int = 256, latent_dim: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.beta = 1.0  # protocol: the KL weight, set by the callback before every step
        self.train_prior = True  # protocol: whether the prior's parameters learn
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, data_dim)
        )
        self.prior_mean = nn.Parameter(torch.zeros(latent_dim))
        self.prior_logvar = nn.Parameter(torch.zeros(latent_dim))
        self.log_sigma = math.log(0.1)  # fixed Gaussian likelihood scale

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> dict:
        x = batch[0].flatten(1)  # (B, D)
        mean, logvar = self.encoder(x).chunk(2, dim=-1)  # (B, d) each
        z = reparameterize(mean, logvar)
        x_mean = self.decoder(z)
        prior = (self.prior_mean, self.prior_logvar)
        if not self.train_prior:  # REWO's initial phase: the prior stays where it is
            prior = tuple(p.detach() for p in prior)
        recon = -gaussian_log_prob(x, x_mean, torch.full_like(x, 2 * self.log_sigma))  # (B,)
        kl = gaussian_log_prob(z, mean, logvar) - gaussian_log_prob(z, *prior)  # (B,)
        loss = (recon + self.beta * kl).mean()
        constraint = squared_error_per_pixel(x, x_mean).mean()  # C_ba: mean squared pixel error
        self.log("constraint", constraint)
        return {"loss": loss, "constraint": constraint.detach()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _trainer(callback: pl.Callback, steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _data(n: int = 1000, dim: int = 64) -> DataLoader:
    """Points near a 2-d manifold in [0, 1]^64: x = sigmoid(u A), u ~ N(0, I_2)."""
    g = torch.Generator().manual_seed(0)
    x = torch.sigmoid(torch.randn(n, 2, generator=g) @ (2 * torch.randn(2, dim, generator=g)))
    return DataLoader(TensorDataset(x), batch_size=100, shuffle=True)


class _PriorSnapshots(pl.Callback):
    """Records the prior mean and the scheme's phase after every step."""

    def __init__(self) -> None:
        self.rows: list[tuple[bool, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append((pl_module.train_prior, pl_module.prior_mean.detach().clone()))


def test_rewo_drives_a_user_written_vae() -> None:
    pl.seed_everything(0)
    model = UserVAE(data_dim=64)
    assert isinstance(model, ConstraintModule)
    # kappa = 0.1 (an RMS error) is reached after about 65 steps; then beta grows to ~1 by 110.
    rewo = REWO(kappa=0.1, nu=50.0, tau=3.0, alpha=0.9, beta_init=1e-3)
    snapshots = _PriorSnapshots()
    trainer = _trainer(rewo, steps=120)
    trainer.callbacks.append(snapshots)
    trainer.fit(model, train_dataloaders=_data())

    assert rewo.switch_step is not None, f"no phase switch; C_t = {rewo.c_hat}"
    assert 20 < rewo.switch_step < 100, rewo.switch_step
    assert model.train_prior and rewo.train_prior
    assert 10 * 1e-3 < model.beta == rewo.beta <= 1.0  # beta rose (eq. 11) and is on the module
    initial = [m for on, m in snapshots.rows if not on]
    assert all(torch.equal(m, torch.zeros(2)) for m in initial)  # prior frozen in phase one
    assert not torch.equal(snapshots.rows[-1][1], torch.zeros(2))  # and learning afterwards


class _NoBeta(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(64, 64)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x = batch[0].flatten(1)
        return (self.net(x) - x).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_module_without_protocol_fails_at_attach_time_saying_what_is_missing() -> None:
    module = _NoBeta()
    assert not isinstance(module, ConstraintModule)
    with pytest.raises(TypeError, match=r"_NoBeta lacks attribute\(s\) beta, train_prior"):
        _trainer(REWO(kappa=0.1), steps=2).fit(module, train_dataloaders=_data())


def test_training_step_without_constraint_fails_with_the_fix() -> None:
    module = _NoBeta()
    module.beta, module.train_prior = 1.0, True  # attributes there, but no "constraint" returned
    with pytest.raises(KeyError, match="return a dict with key 'constraint'"):
        _trainer(REWO(kappa=0.1), steps=2).fit(module, train_dataloaders=_data())
