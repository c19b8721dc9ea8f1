"""Train a model: ``python -m vhp_lightning.train [overrides]`` (also the ``vhp-train`` command).

Examples::

    python -m vhp_lightning.train                                  # VHP + REWO on the pendulum
    python -m vhp_lightning.train dataset=mnist optim=rewo         # paper's MNIST setting
    python -m vhp_lightning.train trainer.max_steps=2000 logger=wandb
    python -m vhp_lightning.train -m optim.kappa=0.02,0.05         # a sweep
    python -m vhp_lightning.train ckpt_path=outputs/.../checkpoints/last.ckpt  # resume
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from vhp_lightning.checkpoint import AtomicCheckpointIO
from vhp_lightning.config import instantiate_group, validate
from vhp_lightning.module import VHPModule

log = logging.getLogger(__name__)

# Lightning-internal notices that say nothing actionable to our users.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def train(cfg: DictConfig) -> dict[str, float]:
    """Build everything from ``cfg``, fit (and test), return the final metrics."""
    validate(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    scheme = instantiate(cfg.optim.scheme)  # validates kappa, nu, ... before any heavy work
    datamodule = instantiate(cfg.dataset)
    module = VHPModule(
        model=instantiate(cfg.model),
        optimizer=instantiate(cfg.optim.optimizer),
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
    )
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag wins over a configured bar
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks, scheme],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
        )
        metrics = _floats(trainer.callback_metrics)
        if not trainer.fast_dev_run and not trainer.interrupted:
            if "val/loss" not in metrics:  # the last step was not a validation step
                for row in trainer.validate(module, datamodule=datamodule, verbose=False):
                    metrics.update(_floats(row))
            if cfg.get("test"):
                for row in trainer.test(module, datamodule=datamodule, verbose=False):
                    metrics.update(_floats(row))
    finally:
        _finish_wandb(loggers)
    _report(trainer, scheme, metrics)
    return metrics


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run so each multirun job gets its own run."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


def _report(trainer: pl.Trainer, scheme: Any, metrics: dict[str, float]) -> None:
    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if trainer.global_rank != 0:
        return
    switch = getattr(scheme, "switch_step", None)
    lines = [f"Finished at step {trainer.global_step}; beta = {getattr(scheme, 'beta', 1.0):.4g}"]
    if switch is not None:
        lines.append(f"Main phase (prior training) started at step {switch}")
    for key in ("val/loss", "test/loss", "test/rmse"):
        if key in metrics:
            lines.append(f"{key} = {metrics[key]:.4f}")
    if out is not None:
        lines.append(f"Outputs: {out}")
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "last_model_path", ""):
                lines.append(f"  last checkpoint: {cb.last_model_path}")
        for lg in trainer.loggers:
            if getattr(lg, "log_dir", None):
                lines.append(f"  {type(lg).__name__}: {lg.log_dir}")
    log.info("\n".join(lines))


@hydra.main(version_base="1.3", config_path="pkg://vhp_lightning.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns val/loss so sweepers (Optuna) can minimise it."""
    metrics = train(cfg)
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
