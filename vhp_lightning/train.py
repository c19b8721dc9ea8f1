"""Train a model: ``python -m vhp_lightning.train [overrides]`` (also the ``vhp-train`` command).

Examples::

    python -m vhp_lightning.train                                  # VHP + REWO on the pendulum
    python -m vhp_lightning.train dataset=mnist optim=rewo         # paper's MNIST setting
    python -m vhp_lightning.train trainer.max_steps=2000 logger=wandb
    python -m vhp_lightning.train -m optim.kappa=0.02,0.05         # a sweep
    python -m vhp_lightning.train ckpt_path=outputs/.../checkpoints/last.ckpt  # resume
    python -m vhp_lightning.train hydra.run.dir=outputs/<date>/<time> resume=true  # same

A SIGTERM (cluster pre-emption) or Ctrl-C writes ``<run dir>/checkpoints/last.ckpt``; resuming
from it replays the interrupted epoch exactly (``datamodules/resumable.py``), so the resumed run
ends equal to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vhp_lightning.io.config import (
    configure_torch,
    instantiate_group,
    plain_config,
    redact_override,
    validate,
)
from vhp_lightning.runs.preflight import (
    WandbLoginError,
    absolute_data_paths,
    check_run_dir_overrides,
    check_wandb,
    missing_plugin,
    parallel_job_gpus,
)
from vhp_lightning.runs.resume import check_resume, checkpoint_dir, resolve_ckpt_path
from vhp_lightning.runs.rundir import (
    RunDirError,
    check_writable,
    log_file,
    run_dir_lock,
    write_run_record,
)
from vhp_lightning.runs.summary import (
    evaluation_stopped,
    finish_wandb,
    last_good_state,
    nll_note,
    report,
)

# Lightning, torch and the model are imported where a run needs them (``_train``, ...), not here:
# ``--help`` and ``--cfg job`` then answer in about a second instead of several.
if TYPE_CHECKING:
    import pytorch_lightning as pl

log = logging.getLogger(__name__)

# Lightning-internal notices that say nothing actionable to our users.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def train(cfg: DictConfig) -> dict[str, float]:
    """Build everything from ``cfg``, fit (and test), return the final metrics.

    Before any heavy work: the config is validated, the run dir is locked against a second
    process (``RunDirLockedError``), the checkpoint to resume is resolved (a fresh run into a run
    dir that holds checkpoints is refused), checked against this config, and the run and
    checkpoint dirs are checked writable (``RunDirError``).
    """
    validate(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if run_dir is not None:
        check_writable(run_dir)
    with run_dir_lock(run_dir), log_file(run_dir) as accept:
        log.info(configure_torch(cfg.get("num_threads", 1), cfg.get("flush_denormal", True)))
        return _train(cfg, run_dir, accept)


def _train(
    cfg: DictConfig, run_dir: Path | None, accept: Callable[[], None] = lambda: None
) -> dict[str, float]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ProgressBar

    from vhp_lightning.callbacks.run_state import AppendingCSVLogger, LogHistory, SpawnTeardown
    from vhp_lightning.datamodules.resumable import resumable_train_loader
    from vhp_lightning.io.checkpoint import AtomicCheckpointIO, load_checkpoint

    ckpt_path = resolve_ckpt_path(cfg)
    if run_dir is not None:
        check_writable(checkpoint_dir(cfg))
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None  # fails early, naming the fix
    config = plain_config(cfg)  # resolved, secrets redacted: stored in checkpoints and logged
    pl.seed_everything(cfg.seed, workers=True)
    scheme = instantiate(cfg.optim.scheme)  # validates kappa, nu, ... before any heavy work
    datamodule = instantiate(cfg.dataset)
    resumable_train_loader(datamodule, seed=cfg.seed)  # exact mid-epoch resume
    module = instantiate(cfg.module)(
        model=instantiate(cfg.model), optimizer=instantiate(cfg.optim.optimizer), config=config
    )
    if ckpt is not None:
        check_resume(ckpt, config, module, path=str(ckpt_path))
        del ckpt
    write_run_record(cfg, run_dir)  # accepted: only now does the run dir's record change
    accept()  # ... and its train.log
    loggers = instantiate_group(OmegaConf.create(config.get("logger") or {}))  # no secrets
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag wins over a configured bar
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    if any(isinstance(lg, AppendingCSVLogger) for lg in loggers):
        callbacks.append(LogHistory())  # the CSV rows of each checkpoint: resume appends
    gpus = parallel_job_gpus(cfg)  # hydra/launcher=parallel on G > 1 GPUs: job k on GPU k mod G
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks, scheme, SpawnTeardown()],  # SpawnTeardown last: it ends DDP
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(root=checkpoint_dir(cfg) if run_dir is not None else None)],
        **({"devices": gpus} if gpus else {}),
    )
    for lg in loggers:
        lg.log_hyperparams(config)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = _floats(trainer.callback_metrics)
        if not trainer.fast_dev_run and not trainer.interrupted:
            if "val/loss" not in metrics:  # the last step was not a validation step
                for row in trainer.validate(module, datamodule=datamodule, verbose=False):
                    metrics.update(_floats(row))
            if cfg.get("test"):
                for row in trainer.test(module, datamodule=datamodule, verbose=False):
                    metrics.update(_floats(row))
    finally:
        finish_wandb(loggers)
    report(trainer, scheme, metrics)
    return metrics


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _refuse(err: BaseException) -> NoReturn:
    """A refused command: its one-line reason (no traceback), exit status 1."""
    log.error(str(err))
    sys.exit(1)


def main() -> Any:
    """``vhp-train`` / ``python -m vhp_lightning.train``: checks that a chosen sweep plugin is
    installed and that the run dir can be made, then runs the Hydra entry point ``hydra_main``."""
    os.environ["MPLBACKEND"] = "Agg"  # figures are written to files, never shown
    error = missing_plugin(sys.argv[1:]) or check_run_dir_overrides(sys.argv[1:])
    if error:
        sys.exit(error)
    return hydra_main()


@hydra.main(version_base="1.3", config_path="pkg://vhp_lightning.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``optimized_metric`` (default val/loss: the beta = 1 bound -ELBO
    on the validation split, whatever beta the scheme reached) for sweepers (Optuna). A SIGTERM
    exits with status 143: during training after the checkpoint (resume it), during the end-of-run
    evaluation with a message that the checkpoint is complete and how to evaluate it."""
    sys.argv[1:] = [redact_override(a) for a in sys.argv[1:]]  # W&B records the command line
    try:  # the checks that need no torch: a wrong value is refused in about a second
        validate(cfg)
        check_wandb(cfg)
        absolute_data_paths(cfg)
    except (ValueError, TypeError, WandbLoginError) as err:
        _refuse(err)
    from hydra.errors import InstantiationException
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from vhp_lightning.io.checkpoint import CheckpointError
    from vhp_lightning.io.instantiate import UnsafeConfigError
    from vhp_lightning.module import NonFiniteLossError
    from vhp_lightning.runs.interrupts import EvaluationInterrupted

    try:
        metrics = train(cfg)
    except (CheckpointError, RunDirError, UnsafeConfigError, InstantiationException) as err:
        _refuse(err)
    except EvaluationInterrupted as stop:
        log.error(evaluation_stopped(cfg, stop))
        sys.exit(128 + stop.signum)
    except NonFiniteLossError as err:
        log.error(f"{err} {last_good_state(cfg)}")
        sys.exit(1)
    except SIGTERMException as stop:  # SIGTERM, or a first Ctrl-C during fit (SaveOnInterrupt)
        signum = getattr(stop, "signum", signal.SIGTERM)
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        log.error(f"Stopped by {name}; resume with resume=true (same hydra.run.dir) or ckpt_path.")
        sys.exit(128 + signum)
    note = nll_note(cfg, metrics)
    if note:
        log.info(note)
    key = cfg.get("optimized_metric", "val/loss")  # what a sweeper (Optuna) minimises
    if key not in metrics:
        log.warning(f"optimized_metric={key} was not logged; logged: {', '.join(sorted(metrics))}")
    return metrics.get(key)


if __name__ == "__main__":
    main()
