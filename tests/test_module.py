"""VHPModule: the two-optimiser manual step of Alg. 1, step counting, and NaN handling."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vhp_lightning.callbacks.rewo import REWO
from vhp_lightning.datamodules.pendulum import PendulumDataModule
from vhp_lightning.io.checkpoint import AtomicCheckpointIO, load_checkpoint
from vhp_lightning.models.vhp import VHP
from vhp_lightning.module import NonFiniteLossError, VHPModule
from vhp_lightning.nets import MLP, GaussianMLP
from vhp_lightning.nets.likelihoods import GaussianLikelihood


def tiny_vhp(k: int = 4) -> VHP:
    h = [16, 16]
    return VHP(
        encoder=GaussianMLP(256, 2, h),
        decoder=MLP(2, 256, h),
        likelihood=GaussianLikelihood(),
        prior_encoder=GaussianMLP(2, 2, h),
        prior_decoder=GaussianMLP(2, 2, h),
        n_importance=k,
    )


def tiny_data() -> PendulumDataModule:
    return PendulumDataModule(n_samples=300, n_val=50, n_test=50, batch_size=50)


def fit(module: VHPModule, steps: int, callbacks: list, root: Path) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(module, datamodule=tiny_data())
    return trainer


def _adam():
    return functools.partial(torch.optim.Adam, lr=1e-3)


def test_initial_phase_freezes_prior_bitwise(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = VHPModule(tiny_vhp(), optimizer=_adam())
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    scheme = REWO(kappa=1e-6)  # unreachable: the run stays in the initial phase
    trainer = fit(module, 10, [scheme], tmp_path)
    after = module.model.state_dict()
    prior = [k for k in before if k.startswith(("prior_encoder", "prior_decoder"))]
    vae = [k for k in before if k.startswith(("encoder", "decoder"))]
    assert prior and vae
    assert all(torch.equal(before[k], after[k]) for k in prior)
    assert all(not torch.equal(before[k], after[k]) for k in vae if k.endswith("weight"))
    assert scheme.beta == 1e-4 and not module.train_prior
    assert trainer.global_step == 10


def test_main_phase_trains_prior_and_counts_one_step_per_batch(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = VHPModule(tiny_vhp(), optimizer=_adam())
    before = {k: v.clone() for k, v in module.model.prior_encoder.state_dict().items()}
    scheme = REWO(kappa=10.0)  # trivially satisfied: switch after the first batch
    trainer = fit(module, 12, [scheme], tmp_path)
    after = module.model.prior_encoder.state_dict()
    assert scheme.switch_step == 0 and module.train_prior
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.global_step == 12  # two optimisers, still one step per batch
    assert scheme.step == 12 and 1e-4 < scheme.beta <= 1.0


class _NaNAfter(torch.nn.Module):
    """Wraps a model; its loss becomes NaN from the ``bad_step``-th call on."""

    def __init__(self, model: VHP, bad_step: int) -> None:
        super().__init__()
        self.inner, self.bad_step, self.calls = model, bad_step, 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        self.calls += 1
        parts = self.inner.loss(x, beta)
        if self.calls > self.bad_step:
            parts["loss"] = parts["loss"] * float("nan")
        return parts


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = VHPModule(_NaNAfter(tiny_vhp(), bad_step=7), optimizer=_adam())
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=5
    )
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at global step 7"):
        fit(module, 50, [REWO(kappa=10.0), ckpt], tmp_path)
    saved = load_checkpoint(tmp_path / "last.ckpt")
    assert saved["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert not list(tmp_path.glob("*.tmp"))  # nothing half-written
