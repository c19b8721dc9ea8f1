"""What a run says when it ends: the closing summary, and the message of a run stopped by a
signal or a non-finite loss (what is on disk and the command that goes on from there)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vhp_lightning.runs.resume import checkpoint_dir, last_checkpoint, newest_last

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from vhp_lightning.callbacks.base import BetaScheme
    from vhp_lightning.runs.interrupts import EvaluationInterrupted

log = logging.getLogger(__name__)


def initial_phase_warning(scheme: BetaScheme) -> str | None:
    """A warning when a REWO-like scheme never met its constraint: the prior was never trained."""
    kappa_sq = scheme.kappa_sq
    if kappa_sq is None or scheme.train_prior:
        return None  # no constraint, switched, or no initial phase at all (GECO, warm-up)
    c_hat = scheme.c_hat
    c_txt = "not measured" if c_hat is None else f"{c_hat:.3g}"
    return (
        f"{type(scheme).__name__} never left its initial phase: the running reconstruction error "
        f"C_t = {c_txt} stayed above kappa^2 = {kappa_sq:.3g} (kappa = {scheme.kappa}), so beta "
        "stayed at its initial value and the prior's parameters (if any) were never trained. "
        "Train longer (trainer.max_steps) or raise optim.kappa (the RMS error per data dimension "
        "you accept)."
    )


def report(trainer: pl.Trainer, scheme: BetaScheme, metrics: dict[str, float]) -> None:
    """The closing summary: final step and beta, REWO's switch step, the evaluation metrics
    (``test/nll`` with its S), and where the checkpoint, the logs and the figures are."""
    from vhp_lightning.callbacks.run_state import launched_by_spawn

    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if trainer.global_rank != 0:
        return
    # Under ddp_spawn training ran in worker processes: this process's trainer and scheme did not
    # advance; the logged beta and the checkpoint on disk are the results.
    spawned = launched_by_spawn(trainer)
    switch = None if spawned else scheme.switch_step
    beta = metrics.get(f"{scheme.name}/beta", scheme.beta)
    where = (
        f"in {trainer.world_size} worker processes" if spawned else f"at step {trainer.global_step}"
    )
    lines = [f"Finished {where}; beta = {beta:.4g}"]
    if switch is not None:
        lines.append(f"Main phase (prior training) started at step {switch}")
    warning = None if spawned else initial_phase_warning(scheme)
    if warning:
        log.warning(warning)
    for key in ("val/loss", "test/loss", "test/rmse"):
        if key in metrics:
            lines.append(f"{key} = {metrics[key]:.4f}")
    if "test/nll" in metrics:
        samples = getattr(trainer.lightning_module, "nll_samples", None)
        note = f" (importance-sampled, S = {samples})" if samples else ""
        lines.append(f"test/nll = {metrics['test/nll']:.4f}{note}")
    if out is not None:
        lines.append(f"Outputs: {out}")
        for cb in trainer.checkpoint_callbacks:
            last = (
                getattr(cb, "last_model_path", "")
                or Path(getattr(cb, "dirpath", None) or out) / "last.ckpt"
            )
            if Path(last).is_file():
                lines.append(f"  last checkpoint: {last}")
        lines += [f"  {line}" for lg in trainer.loggers for line in logger_lines(lg)]
        figures: list[str] = []  # RunFigures, PendulumFigures, ImageGrids, ... (each once)
        for cb in trainer.callbacks:
            paths = list(getattr(cb, "figure_paths", None) or [])
            if spawned and not paths and getattr(cb, "dirpath", None):  # drawn in a worker
                paths = sorted(Path(cb.dirpath).glob("*.png"))
            figures += [str(p) for p in paths if Path(p).is_file() and str(p) not in figures]
        lines += [f"  figure: {path}" for path in figures]
    log.info("\n".join(lines))


def eval_command(ckpt: Path | None) -> str:
    """The command that measures the paper's test/nll of ``ckpt``."""
    return (
        f"python -m vhp_lightning.evaluate ckpt_path={ckpt or '<run dir>/checkpoints/last.ckpt'} "
        "metrics=[nll]"
    )


def evaluation_stopped(cfg: DictConfig, stop: EvaluationInterrupted) -> str:
    """The message of a signal during the end-of-run validate/test: training had finished."""
    name = "Ctrl-C" if stop.signum == signal.SIGINT else "SIGTERM"
    ckpt = last_checkpoint(cfg)
    where = (
        f"The checkpoint {ckpt} is complete: there is nothing to resume."
        if ckpt is not None
        else "This run wrote no checkpoint (no model_checkpoint callback)."
    )
    return (
        f"Stopped by {name} during the end-of-run {stop.stage}, after training finished at step "
        f"{stop.step}. {where} Evaluate it later with: {eval_command(ckpt)} (add limit=1000 "
        "n_samples=100 for a quick number)."
    )


def nll_note(cfg: DictConfig, metrics: dict[str, float]) -> str | None:
    """How the end-of-run test/nll was measured, and the command of the full protocol."""
    if "test/nll" not in metrics:
        return None
    images = int(metrics.get("test/nll_images", 0)) or "all"
    return (
        f"test/nll is the mean over {images} test images with S = {cfg.get('nll_samples', 100)} "
        f"(test_nll_images, nll_samples); the paper's protocol (every test image, S = 5000): "
        f"{eval_command(last_checkpoint(cfg))}"
    )


def last_good_state(cfg: DictConfig) -> str:
    """What is on disk after a stop: the newest checkpoint (and its step), or that there is none."""
    folder = checkpoint_dir(cfg)
    last = newest_last(folder) if folder.is_dir() else None
    if last is None:
        every = ((cfg.get("callbacks") or {}).get("model_checkpoint") or {}).get(
            "every_n_train_steps"
        )
        return (
            f"No checkpoint was written before it ({folder} holds none"
            + (f"; the first comes at step {every}" if every else "")
            + "): nothing to resume, start again after the fix."
        )
    from vhp_lightning.io.checkpoint import load_checkpoint

    step = load_checkpoint(last).get("global_step", "?")
    return f"The last good state is {last} (step {step}): resume with ckpt_path={last}."


def finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run so each multirun job gets its own run."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def logger_lines(logger: Any) -> list[str]:
    """Where a logger put the run: the metrics CSV file, the TensorBoard folder, the W&B run
    (its page, or the offline folder to ``wandb sync``)."""
    name = type(logger).__name__
    if "CSV" in name:
        path = getattr(logger, "metrics_file", None) or Path(logger.log_dir) / "metrics.csv"
        return [f"metrics (CSV): {path}"]
    if "TensorBoard" in name:
        return [f"TensorBoard: tensorboard --logdir {logger.log_dir}"]
    if "Wandb" in name:
        run = getattr(logger, "_experiment", None)
        url = getattr(run, "url", None) if run is not None else None
        if url:
            return [f"W&B run: {url}"]
        folder = getattr(run, "dir", None) if run is not None else None
        where = Path(folder).parent if folder else getattr(logger, "save_dir", "?")
        return [f"W&B run (offline): wandb sync {where}"]
    log_dir = getattr(logger, "log_dir", None)
    return [f"{name}: {log_dir}"] if log_dir else []
