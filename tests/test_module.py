"""VHPModule: the manual step of Alg. 1 (one optimiser, the prior group frozen in the initial
phase), step counting, old two-optimiser checkpoints, and NaN handling."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vhp_lightning.callbacks.rewo import REWO
from vhp_lightning.datamodules.pendulum import PendulumDataModule
from vhp_lightning.io.checkpoint import (
    AtomicCheckpointIO,
    load_checkpoint,
)
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
    # The prior group has no Adam state yet: its moments start at the switch (Alg. 1).
    opt = trainer.optimizers[0]
    assert len(opt.param_groups) == 2
    assert all(p not in opt.state for p in opt.param_groups[1]["params"])
    assert all(int(opt.state[p]["step"]) == 10 for p in opt.param_groups[0]["params"])


def test_main_phase_trains_prior_and_counts_one_step_per_batch(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = VHPModule(tiny_vhp(), optimizer=_adam())
    before = {k: v.clone() for k, v in module.model.prior_encoder.state_dict().items()}
    scheme = REWO(kappa=10.0)  # trivially satisfied: switch after the first batch
    trainer = fit(module, 12, [scheme], tmp_path)
    after = module.model.prior_encoder.state_dict()
    assert scheme.switch_step == 0 and module.train_prior
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.global_step == 12  # one optimiser step per batch
    assert scheme.step == 12 and 1e-4 < scheme.beta <= 1.0


def _two_adams_reference(model: VHP, batches: list[torch.Tensor], switch: int) -> None:
    """The scheme this module replaced: theta/phi and Theta/Phi in two Adams, the second
    stepped only from batch ``switch`` on (beta fixed at 0.5)."""
    vae = torch.optim.Adam(list(model.vae_parameters()), lr=1e-3, foreach=True)
    prior = torch.optim.Adam(list(model.prior_parameters()), lr=1e-3, foreach=True)
    for i, x in enumerate(batches):
        vae.zero_grad(set_to_none=True)
        prior.zero_grad(set_to_none=True)
        model.loss(x, beta=0.5)["loss"].backward()
        vae.step()
        if i >= switch:
            prior.step()


def _one_adam(model: VHP, batches: list[torch.Tensor], switch: int) -> torch.optim.Optimizer:
    """``VHPModule``'s step outside Lightning: one Adam, the prior's grads dropped before
    ``switch``."""
    groups = [{"params": list(model.vae_parameters())}, {"params": list(model.prior_parameters())}]
    opt = torch.optim.Adam(groups, lr=1e-3, foreach=True)
    for i, x in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        model.loss(x, beta=0.5)["loss"].backward()
        if i < switch:
            for p in model.prior_parameters():
                p.grad = None
        opt.step()
    return opt


def test_one_optimiser_with_frozen_prior_group_equals_two_optimisers_bitwise() -> None:
    torch.manual_seed(0)
    batches = [torch.rand(8, 256) for _ in range(6)]
    torch.manual_seed(1)
    a = tiny_vhp()
    b = tiny_vhp()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(2)
    _two_adams_reference(a, batches, switch=3)
    torch.manual_seed(2)
    _one_adam(b, batches, switch=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


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


def test_fused_adam_config_equals_foreach_up_to_rounding_and_skips_frozen_prior(
    compose_cfg,
) -> None:
    """``optim/optimizer=adam_fused`` builds a fused Adam whose updates equal the default foreach
    Adam's up to float32 rounding (not bitwise: the documented price of the opt-in), and which,
    like it, leaves a group whose gradients are ``None`` untouched (REWO's initial phase)."""
    from hydra.utils import instantiate

    params, opts = {}, {}
    for name in ("adam", "adam_fused"):
        torch.manual_seed(0)
        net, prior = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)
        factory = instantiate(compose_cfg(f"optim/optimizer={name}").optim.optimizer)
        opts[name] = factory([{"params": net.parameters()}, {"params": prior.parameters()}])
        gen = torch.Generator().manual_seed(1)
        frozen = [p.detach().clone() for p in prior.parameters()]
        for _ in range(20):
            for p in net.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            for p in prior.parameters():
                p.grad = None
            opts[name].step()
        assert all(torch.equal(a, b) for a, b in zip(frozen, prior.parameters(), strict=True))
        params[name] = [p.detach() for p in net.parameters()]
    assert opts["adam_fused"].defaults["fused"] is True
    assert opts["adam"].defaults["foreach"] is True and not opts["adam"].defaults["fused"]
    for a, b in zip(params["adam"], params["adam_fused"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["vhp", "iwae"])
def test_val_loss_beta_is_the_models_own_objective_and_leaves_the_rng(kind) -> None:
    """``val/loss_beta`` is ``model.loss(x, beta)["loss"]`` (for IWAE its beta-weighted IW
    objective, not recon + beta * kl), drawn in a forked RNG: the global RNG after validation is
    the one a beta = 1 pass alone leaves, so training does not change."""
    from vhp_lightning.models.iwae import IWAE

    h = [16, 16]
    model = (
        tiny_vhp()
        if kind == "vhp"
        else IWAE(GaussianMLP(256, 2, h), MLP(2, 256, h), GaussianLikelihood(), n_importance=4)
    )
    module = VHPModule(model, optimizer=_adam())
    module.beta = 0.5
    logged: dict[str, torch.Tensor] = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)  # type: ignore[method-assign]
    module.log_dict = lambda d, **kw: logged.update(d)  # type: ignore[method-assign]
    x = torch.rand(8, 256)
    torch.manual_seed(3)
    module._eval_step("val", x)
    after = torch.get_rng_state()
    torch.manual_seed(3)
    with torch.no_grad():
        model.loss(x, beta=1.0)
        state = torch.get_rng_state()
        expected = model.loss(x, beta=0.5)["loss"]
    assert torch.equal(after, state)
    torch.testing.assert_close(logged["val/loss_beta"], expected)
    if kind == "iwae":  # not the ELBO-type recombination of the beta = 1 parts
        assert not torch.allclose(expected, logged["val/recon"] + 0.5 * logged["val/kl"])
