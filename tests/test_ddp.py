"""Scale-out on CPU: DDP (2 processes, gloo) equals one process with the same global batch;
bf16-mixed precision keeps the bounds in float32.

What differs between the runs is only how the work is split: rank r gets every other example of
each global batch (``DistributedSampler``, no shuffling), computes the batch mean on its half,
DDP averages the gradients and the beta-scheme all-reduces C_ba (``callbacks/base.py``). Two
things are pinned so that the comparison is exact up to float summation order:

* the data order: under DDP Lightning shuffles with a ``DistributedSampler`` (permutation p of
  epoch e from seed + e; rank r reads p[r::2]), so global batch t is the set p[50t : 50t + 50].
  The one-process run reads p in order (``SameOrderPendulum``), so its batch t is the same set;
* the sampling noise: each process has its own RNG stream, so the model's eps ~ N(0, I) would
  differ between the runs. ``FixedNoiseVHP`` replaces it by a fixed pattern eps[k, b, d] = c[k, d]
  that does not depend on the example b or the process.

What remains is the order of float additions (batch means over 50 vs 2 x 25 examples, the
all-reduce): parameters end ~3e-8 apart, beta ~1e-7 relative; tolerances 1e-6 / 1e-5.

The workers are started with ``ddp_fork`` (the same ``DDPStrategy`` as ``trainer=ddp``'s
``ddp_spawn``; only the process start differs) because spawned workers would re-import torch and
Lightning, which costs many seconds; ``trainer=ddp`` itself runs in ``tests/test_configs.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from tests.conftest import TINY_CLI
from vhp_lightning.datamodules.pendulum import PendulumDataModule
from vhp_lightning.io.checkpoint import load_checkpoint
from vhp_lightning.models.vhp import VHP
from vhp_lightning.train import train

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


def _fixed_noise(
    mean: torch.Tensor, logvar: torch.Tensor, n_samples: int | None = None
) -> torch.Tensor:
    """``bounds.reparameterize`` with eps[k, b, d] = c[k, d]: the same for every example."""
    k, d = n_samples or 1, mean.shape[-1]
    eps = torch.linspace(-1.5, 1.5, k * d, dtype=mean.dtype, device=mean.device).view(k, 1, d)
    return mean + torch.exp(0.5 * logvar) * (eps if n_samples else eps[0])


class FixedNoiseVHP(VHP):
    """The VHP with the sampling noise of ``_fixed_noise`` (test helper)."""

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        with mock.patch("vhp_lightning.models.vhp.reparameterize", _fixed_noise):
            return super().loss(x, beta)


class SameOrderPendulum(PendulumDataModule):
    """The pendulum; run in one process, the training split is read in the order of the
    ``DistributedSampler`` that Lightning installs under DDP (test helper)."""

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.world_size > 1:
            return super().train_dataloader()  # Lightning swaps in its DistributedSampler
        data = self.splits["train"]
        order = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
        return DataLoader(data, batch_size=self.batch_size, sampler=order, drop_last=True)


COMMON = [
    "dataset._target_=tests.test_ddp.SameOrderPendulum",
    "model._target_=tests.test_ddp.FixedNoiseVHP",
    "paper.lr=1e-3",
    "optim.kappa=0.3",  # the phase switch happens after a few steps, then beta moves every step
    "trainer.accelerator=cpu",
    "trainer.max_steps=16",  # two epochs of 8 global batches of 50
    "trainer.log_every_n_steps=1",
    "trainer.check_val_every_n_epoch=1",
    "callbacks=default",
    "~callbacks.progress_bar",
    "~callbacks.save_on_interrupt",
    "callbacks.model_checkpoint.every_n_train_steps=null",
    "callbacks.model_checkpoint.every_n_epochs=1",
    "test=false",
]


def _run(compose_cfg, run_dir: Path, *extra: str) -> tuple[dict, dict, dict[str, list[float]]]:
    metrics = train(compose_cfg(*COMMON, *extra, run_dir=run_dir))
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("rewo/beta")]
    trajectory = {k: [float(r[k]) for r in rows] for k in ("rewo/beta", "rewo/c_hat", "step")}
    return metrics, ckpt, trajectory


def test_two_processes_match_one_process_with_the_same_global_batch(compose_cfg, tmp_path):
    m1, one, traj1 = _run(compose_cfg, tmp_path / "one", "dataset.batch_size=50")
    m2, two, traj2 = _run(
        compose_cfg,
        tmp_path / "two",
        "trainer=ddp",
        "trainer.strategy=ddp_fork",
        "trainer.devices=2",
        "dataset.batch_size=25",  # per process: the same global batch of 50
    )
    assert one["global_step"] == two["global_step"] == 16
    # beta and the running constraint, step by step (both runs log every step on rank 0)
    assert traj1["step"] == traj2["step"] and len(traj1["step"]) == 16
    assert traj1["rewo/beta"] == pytest.approx(traj2["rewo/beta"], rel=1e-5)
    assert traj1["rewo/c_hat"] == pytest.approx(traj2["rewo/c_hat"], rel=1e-5)
    assert len(set(traj1["rewo/beta"])) > 2  # beta really moved (the main phase started)
    scheme = next(k for k in one["callbacks"] if k.startswith("REWO"))
    assert one["callbacks"][scheme]["train_prior"] and two["callbacks"][scheme]["train_prior"]
    assert one["callbacks"][scheme]["switch_step"] == two["callbacks"][scheme]["switch_step"]
    # final parameters (16 Adam steps of lr 1e-3; measured max difference 3e-8)
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the validation bound, averaged across the two processes
    assert m2["val/loss"] == pytest.approx(m1["val/loss"], rel=1e-5)


def test_bf16_mixed_on_cpu_keeps_the_bounds_in_float32(compose_cfg, monkeypatch) -> None:
    """trainer.precision=bf16-mixed: the networks run in bf16 (autocast), every loss part the
    model returns (log-weights, logsumexp, KL) is float32, and training runs and stays finite."""
    seen: list[tuple[torch.dtype, dict[str, torch.dtype]]] = []
    loss = VHP.loss

    def recording_loss(self: VHP, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        z_mean, _ = self.encode(x)
        parts = loss(self, x, beta)
        seen.append((z_mean.dtype, {k: v.dtype for k, v in parts.items()}))
        return parts

    monkeypatch.setattr(VHP, "loss", recording_loss)
    metrics = train(compose_cfg("trainer.precision=bf16-mixed", "trainer.accelerator=cpu"))
    assert seen and all(net == torch.bfloat16 for net, _ in seen)  # autocast reached the nets
    assert all(set(parts.values()) == {torch.float32} for _, parts in seen)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_shipped_ddp_config_runs_end_to_end(run_cli, tmp_path: Path) -> None:
    # trainer=ddp as shipped (ddp_spawn, 2 gloo processes on CPU), through the real command line
    # and past training: the final validate/test, the CSV log and the closing summary. It once
    # crashed after training in the CSV logger ("dict contains fields not in fieldnames").
    run = tmp_path / "run"
    tiny = [o for o in TINY_CLI if o != "callbacks=none"]  # the default callbacks: figures too
    result = run_cli(
        *tiny, "trainer=ddp", "trainer.accelerator=cpu", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("rewo/beta")] == [0, 1, 2, 3]
    assert any(r.get("test/loss") for r in rows) and any(r.get("val/loss") for r in rows)
    summary = result.stdout + result.stderr
    assert "Finished in 2 worker processes" in summary
    figures = [line for line in summary.splitlines() if line.strip().startswith("figure: ")]
    assert figures and len(figures) == len(set(figures))  # each picture listed once
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
