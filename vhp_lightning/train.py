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

import contextlib
import importlib.util
import logging
import logging.handlers
import netrc
import os
import signal
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vhp_lightning.io.config import (
    configure_torch,
    instantiate_group,
    plain_config,
    redact,
    redact_override,
    validate,
)
from vhp_lightning.io.files import write_text

# Lightning, torch and the model are imported where a run needs them (``_train``, ...), not here:
# ``--help`` and ``--cfg job`` then answer in about a second instead of several.
if TYPE_CHECKING:
    import pytorch_lightning as pl

    from vhp_lightning.module import EvaluationInterrupted

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None  # type: ignore[assignment]

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
        _check_writable(run_dir)
    with _run_dir_lock(run_dir), _log_file(run_dir) as accept:
        log.info(configure_torch(cfg.get("num_threads", 1), cfg.get("flush_denormal", True)))
        return _train(cfg, run_dir, accept)


def _train(
    cfg: DictConfig, run_dir: Path | None, accept: Callable[[], None] = lambda: None
) -> dict[str, float]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ProgressBar

    from vhp_lightning.callbacks.run_state import AppendingCSVLogger, LogHistory
    from vhp_lightning.datamodules.resumable import resumable_train_loader
    from vhp_lightning.io.checkpoint import (
        AtomicCheckpointIO,
        check_compatible,
        load_checkpoint,
        numeric_changes,
    )
    from vhp_lightning.io.trusted_state import check_optimizer_state, trusted_resume_state
    from vhp_lightning.module import VHPModule

    ckpt_path = resolve_ckpt_path(cfg)
    if run_dir is not None:
        _check_writable(checkpoint_dir(cfg))
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None  # fails early, naming the fix
    config = plain_config(cfg)  # resolved, secrets redacted: stored in checkpoints and logged
    pl.seed_everything(cfg.seed, workers=True)
    scheme = instantiate(cfg.optim.scheme)  # validates kappa, nu, ... before any heavy work
    datamodule = instantiate(cfg.dataset)
    resumable_train_loader(datamodule, seed=cfg.seed)  # exact mid-epoch resume
    module = VHPModule(
        model=instantiate(cfg.model),
        optimizer=instantiate(cfg.optim.optimizer),
        config=config,
        nll_samples=int(cfg.get("nll_samples", 100)),
        nll_images=cfg.get("test_nll_images"),
        log_parts_every_n_steps=cfg.get("log_parts_every_n_steps", 50),
        compile_backend=cfg.get("compile"),
    )
    if ckpt is not None:
        check_compatible(ckpt, config, module.state_dict(), path=ckpt_path)  # type: ignore[arg-type]
        trusted_resume_state(ckpt, path=str(ckpt_path))
        check_optimizer_state(ckpt, module.configure_optimizers(), path=str(ckpt_path))
        changed = numeric_changes(ckpt.get("vhp_config") or {}, config)
        if changed:
            log.warning(
                "Resuming with %s: allowed, but the run is then no longer bitwise equal to an "
                "uninterrupted one (float sums in another order). Keep the checkpoint's values "
                "for an exact resume.",
                "; ".join(changed),
            )
        del ckpt
    _write_run_record(cfg, run_dir)  # accepted: only now does the run dir's record change
    accept()  # ... and its train.log
    loggers = instantiate_group(OmegaConf.create(config.get("logger") or {}))  # no secrets
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag wins over a configured bar
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    if any(isinstance(lg, AppendingCSVLogger) for lg in loggers):
        callbacks.append(LogHistory())  # the CSV rows of each checkpoint: resume appends
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks, scheme],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(root=checkpoint_dir(cfg) if run_dir is not None else None)],
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
        _finish_wandb(loggers)
    _report(trainer, scheme, metrics)
    return metrics


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where this run writes ``last.ckpt``: the checkpoint callback's folder, else
    ``<run dir>/checkpoints``."""
    callbacks = cfg.get("callbacks") or {}
    for name in ("model_checkpoint", "save_on_interrupt"):
        if callbacks.get(name) and callbacks[name].get("dirpath"):
            return Path(callbacks[name].dirpath)
    return Path(HydraConfig.get().runtime.output_dir) / "checkpoints"


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path=<file>``, or ``ckpt_path=last`` / ``resume=true``
    = the newest ``last*.ckpt`` of this run dir (``ckpt_path=last`` requires one; ``resume=true``
    starts fresh when there is none yet, so a re-queued cluster job can always pass it).

    A run dir's checkpoints are only ever continued: a fresh run, or a resume from another run's
    checkpoint, into a checkpoint dir that already holds checkpoints is refused (it would delete
    the old log and write ``last-v1.ckpt`` beside the old ``last.ckpt``).
    """
    ckpt = cfg.get("ckpt_path")
    folder = checkpoint_dir(cfg)
    if ckpt not in (None, "last"):
        if Path(str(ckpt)).resolve().parent != folder.resolve():
            _refuse_used_checkpoint_dir(folder, f"resuming from {ckpt} (another run's checkpoint)")
        return str(ckpt)
    if ckpt != "last" and not cfg.get("resume", False):
        _refuse_used_checkpoint_dir(folder, "a fresh run")
        return None
    last = _newest_last(folder)
    if last is not None:
        log.info("Resuming from %s", last)
        return str(last)
    if ckpt == "last":
        from vhp_lightning.io.checkpoint import CheckpointError

        raise CheckpointError(
            f"ckpt_path=last: this run dir has no checkpoint ({folder / 'last.ckpt'} does not "
            "exist). Point hydra.run.dir at the run to resume (hydra.run.dir=outputs/<date>/"
            "<time>), pass ckpt_path=<file>, or use resume=true to start fresh when there is none."
        )
    _refuse_used_checkpoint_dir(folder, "resume=true without a last.ckpt")
    log.info("resume=true: no checkpoint in %s yet, starting fresh", folder)
    return None


def _newest_last(folder: Path) -> Path | None:
    """The most recently written ``last.ckpt`` / ``last-v<N>.ckpt`` in ``folder``, if any."""
    found = [p for p in folder.glob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _refuse_used_checkpoint_dir(folder: Path, what: str) -> None:
    """Raise ``RunDirError`` if ``folder`` holds checkpoints: ``what`` would not continue them."""
    found = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if found:
        raise RunDirError(
            f"{folder} already holds checkpoints ({', '.join(found[:3])}"
            f"{', ...' if len(found) > 3 else ''}); refusing {what} into it, which would mix two "
            "runs in one run dir (the old metrics.csv deleted, last-v1.ckpt beside last.ckpt). "
            "Continue that run with resume=true (same hydra.run.dir), or give this run its own "
            "dir (hydra.run.dir=outputs/<new dir>), or delete the old checkpoints."
        )


class RunDirError(RuntimeError):
    """The run dir cannot be used: not writable, or it holds another run's checkpoints."""


class RunDirLockedError(RunDirError):
    """Another live process is training in the same run dir."""


LOCK_NAME = ".vhp-train.lock"


def _launched_rank() -> bool:
    """True in a process that a launcher (Lightning's DDP, torchrun, SLURM) started as a rank
    other than 0 of a run: rank 0 holds the run dir's lock for all of them."""
    keys = ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return any(os.environ.get(k, "0") not in ("", "0") for k in keys)


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path | None) -> Iterator[None]:
    """Hold ``<run dir>/.vhp-train.lock`` while training; refuse if a live process holds it.

    The lock is an ``flock`` on the file, which the kernel releases when the holder exits in any
    way (also ``kill -9``); the file names the holder's PID and host for the error message. A lock
    file left by a dead process is therefore simply taken over. Released (and removed) on return
    and on exceptions.
    """
    if run_dir is None or _launched_rank() or fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirLockedError(
                f"run dir {run_dir} is in use: {holder} holds {path}. Two runs in one dir would "
                "overwrite each other's checkpoints and logs. Wait for it to finish, or give this "
                "run its own dir (hydra.run.dir=...). If no such process runs, delete the lock "
                "file."
            ) from None
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break  # locked the file that is still at `path` (not one a releaser just removed)
        os.close(fd)
    stale = os.read(fd, 200).decode(errors="replace").strip()
    if stale:
        log.info("Taking over the stale lock of a process that is gone (%s): %s", stale, path)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _check_writable(folder: Path) -> None:
    """Raise ``RunDirError`` unless a file can be created in ``folder`` (or, when it does not
    exist yet, in its nearest existing parent, which is then not created): fails before the
    first training step instead of at the first checkpoint."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise RunDirError(
            f"cannot write to {folder} ({type(err).__name__}: {err}). Training would fail at the "
            "first checkpoint; nothing was trained. Make it writable, free the disk, or point "
            "hydra.run.dir (or callbacks.model_checkpoint.dirpath) at a writable folder."
        ) from err


RECORD = ".hydra"  # the run's record: config.yaml, hydra.yaml, overrides.yaml (Hydra's layout)


def _write_run_record(cfg: DictConfig, run_dir: Path | None) -> None:
    """Write ``<run dir>/.hydra/{config,hydra,overrides}.yaml``, secrets redacted, once the run
    has been accepted (lock taken, checkpoint and config checked). Hydra's own copy is turned
    off (``hydra.output_subdir: null`` in train.yaml): it is written before the task starts, so a
    refused command would have rewritten the record of the run it was refused for."""
    if run_dir is None or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    files = {
        "config.yaml": OmegaConf.to_container(cfg, resolve=False),
        "hydra.yaml": {"hydra": OmegaConf.to_container(hydra_cfg, resolve=False, enum_to_str=True)},
        "overrides.yaml": list(hydra_cfg.overrides.task),
    }
    for name, data in files.items():
        write_text(run_dir / RECORD / name, yaml.safe_dump(redact(data), sort_keys=False))


@contextlib.contextmanager
def _log_file(run_dir: Path | None) -> Iterator[Callable[[], None]]:
    """Yield ``accept()``: until it is called the run's log lines are held in memory; then they
    and all later ones go to ``<run dir>/train.log`` (appending). A refused command (a second
    process, a used run dir, a resume with another config) never writes into a run's log."""
    if run_dir is None or not HydraConfig.initialized():
        yield lambda: None
        return
    root = logging.getLogger()
    held = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    root.addHandler(held)
    handlers: list[logging.Handler] = [held]

    def accept() -> None:
        if len(handlers) > 1:
            return
        file = logging.FileHandler(run_dir / "train.log", mode="a")
        file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        held.setTarget(file)
        held.flush()
        root.removeHandler(held)
        root.addHandler(file)
        handlers.append(file)

    try:
        yield accept
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run so each multirun job gets its own run."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def initial_phase_warning(scheme: Any) -> str | None:
    """A warning when a REWO-like scheme never met its constraint: the prior was never trained."""
    kappa_sq = getattr(scheme, "kappa_sq", None)
    if kappa_sq is None or getattr(scheme, "train_prior", True):
        return None  # no constraint, switched, or no initial phase at all (GECO, warm-up)
    c_hat = getattr(scheme, "c_hat", None)
    c_txt = "not measured" if c_hat is None else f"{c_hat:.3g}"
    return (
        f"{type(scheme).__name__} never left its initial phase: the running reconstruction error "
        f"C_t = {c_txt} stayed above kappa^2 = {kappa_sq:.3g} (kappa = {scheme.kappa}), so beta "
        "stayed at its initial value and the prior's parameters (if any) were never trained. "
        "Train longer (trainer.max_steps) or raise optim.kappa (the RMS error per data dimension "
        "you accept)."
    )


def _report(trainer: pl.Trainer, scheme: Any, metrics: dict[str, float]) -> None:
    """The closing summary: final step and beta, REWO's switch step, the evaluation metrics
    (``test/nll`` with its S), and where the checkpoint, the logs and the figures are."""
    from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if trainer.global_rank != 0:
        return
    # Under ddp_spawn training ran in worker processes: this process's trainer and scheme did not
    # advance; the logged beta and the checkpoint on disk are the results.
    spawned = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
    switch = None if spawned else getattr(scheme, "switch_step", None)
    beta = metrics.get(f"{getattr(scheme, 'name', '')}/beta", getattr(scheme, "beta", 1.0))
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
        for lg in trainer.loggers:
            if getattr(lg, "log_dir", None):
                lines.append(f"  {type(lg).__name__}: {lg.log_dir}")
        figures: list[str] = []  # RunFigures, PendulumFigures, ImageGrids, ... (each once)
        for cb in trainer.callbacks:
            paths = list(getattr(cb, "figure_paths", None) or [])
            if spawned and not paths and getattr(cb, "dirpath", None):  # drawn in a worker
                paths = sorted(Path(cb.dirpath).glob("*.png"))
            figures += [str(p) for p in paths if Path(p).is_file() and str(p) not in figures]
        lines += [f"  figure: {path}" for path in figures]
    log.info("\n".join(lines))


def _check_wandb(cfg: DictConfig) -> None:
    """Fail before any work when ``logger=wandb`` could neither log in nor log offline: without
    ``WANDB_API_KEY``, a ``wandb login`` entry in ``~/.netrc`` or ``WANDB_MODE=offline``, wandb
    would stop at an interactive prompt (or fail) once the run has started."""
    node = (cfg.get("logger") or {}).get("wandb")
    if not node or node.get("offline") or os.environ.get("WANDB_API_KEY"):
        return
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    with contextlib.suppress(OSError, netrc.NetrcParseError):
        if netrc.netrc().authenticators(host):
            return
    raise WandbLoginError(
        "logger=wandb, but there is no W&B login (no WANDB_API_KEY, no `wandb login` entry for "
        f"{host} in ~/.netrc) and WANDB_MODE is not offline. Log offline and sync later: "
        "WANDB_MODE=offline python -m vhp_lightning.train logger=wandb ... (or "
        "logger.wandb.offline=true), then `wandb sync <run dir>/wandb/offline-run-*`; or log in "
        "first: export WANDB_API_KEY=... or run `wandb login`. Nothing was trained."
    )


class WandbLoginError(RuntimeError):
    """``logger=wandb`` without a W&B login and without offline mode."""


def _absolute_data_paths(cfg: DictConfig) -> None:
    """Make a relative ``data_dir`` (and ``dataset.data_dir`` / ``dataset.root``) absolute, so the
    config stored in the checkpoint finds the data from any directory (``vhp_lightning.evaluate``,
    ``load(...).datamodule()``)."""
    for node, key in (
        (cfg, "data_dir"),
        (cfg.get("dataset"), "data_dir"),
        (cfg.get("dataset"), "root"),
    ):
        if node is None or key not in node or OmegaConf.is_interpolation(node, key):
            continue
        value = node.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[key] = str(Path(value).expanduser().resolve())


def _last_checkpoint(cfg: DictConfig) -> Path | None:
    """This run's newest ``last*.ckpt``, if it wrote one."""
    with contextlib.suppress(ValueError, OSError):  # no Hydra run dir (tests), unreadable dir
        return _newest_last(checkpoint_dir(cfg))
    return None


def _eval_command(ckpt: Path | None) -> str:
    return (
        f"python -m vhp_lightning.evaluate ckpt_path={ckpt or '<run dir>/checkpoints/last.ckpt'} "
        "metrics=[nll]"
    )


def _evaluation_stopped(cfg: DictConfig, stop: EvaluationInterrupted) -> str:
    """The message of a signal during the end-of-run validate/test: training had finished."""
    name = "Ctrl-C" if stop.signum == signal.SIGINT else "SIGTERM"
    ckpt = _last_checkpoint(cfg)
    where = (
        f"The checkpoint {ckpt} is complete: there is nothing to resume."
        if ckpt is not None
        else "This run wrote no checkpoint (no model_checkpoint callback)."
    )
    return (
        f"Stopped by {name} during the end-of-run {stop.stage}, after training finished at step "
        f"{stop.step}. {where} Evaluate it later with: {_eval_command(ckpt)} (add limit=1000 "
        "n_samples=100 for a quick number)."
    )


def _nll_note(cfg: DictConfig, metrics: dict[str, float]) -> str | None:
    """How the end-of-run test/nll was measured, and the command of the full protocol."""
    if "test/nll" not in metrics:
        return None
    images = int(metrics.get("test/nll_images", 0)) or "all"
    return (
        f"test/nll is the mean over {images} test images with S = {cfg.get('nll_samples', 100)} "
        f"(test_nll_images, nll_samples); the paper's protocol (every test image, S = 5000): "
        f"{_eval_command(_last_checkpoint(cfg))}"
    )


# Overrides that select a Hydra plugin of the `sweep` extra, and the plugin's module.
SWEEP_PLUGINS = {
    "hparams_search=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=parallel": "hydra_plugins.hydra_joblib_launcher",
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
}


def _missing_plugin(args: list[str]) -> str | None:
    """The error for the first override in ``args`` whose Hydra plugin is not installed (Hydra
    itself would only list an empty set of options)."""
    for arg in args:
        module = SWEEP_PLUGINS.get(arg.lstrip("+~"))
        if module is None:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # not even the hydra_plugins namespace
            found = False
        if not found:
            return (
                f"{arg} needs the Hydra plugin {module.split('.')[-1]}, which is not installed. "
                "Install the sweep extra: pip install '.[sweep]' (from the repo; or pip install "
                "'vhp-lightning[sweep]')."
            )
    return None


def _last_good_state(cfg: DictConfig) -> str:
    """What is on disk after a stop: the newest checkpoint (and its step), or that there is none."""
    folder = checkpoint_dir(cfg)
    last = _newest_last(folder) if folder.is_dir() else None
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


def _refuse(err: BaseException) -> NoReturn:
    """A refused command: its one-line reason (no traceback), exit status 1."""
    log.error(str(err))
    sys.exit(1)


def check_run_dir_overrides(argv: list[str]) -> str | None:
    """The message for a ``hydra.run.dir=`` / ``hydra.sweep.dir=`` that Hydra could not create
    (a name longer than the file system allows, a path through a file), else ``None``: checked
    before Hydra makes the folder, which would fail with a raw traceback."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        path = Path(value).expanduser()
        for part in path.parts:
            if len(os.fsencode(part)) > 255:
                return (
                    f"{key}={value[:60]}...: the folder name {part[:40]!r}... has "
                    f"{len(os.fsencode(part))} bytes, more than the 255 a file system allows. "
                    f"Choose a shorter {key}."
                )
        for parent in [path, *path.parents]:
            if parent.exists():
                if not parent.is_dir():
                    return (
                        f"{key}={value}: {parent} is a file, not a folder. Choose another "
                        f"{key} (or move the file)."
                    )
                if not os.access(parent, os.W_OK | os.X_OK):
                    return (
                        f"{key}={value}: cannot create folders in {parent} (not writable). "
                        f"Choose a writable {key}."
                    )
                break
    return None


def main() -> Any:
    """``vhp-train`` / ``python -m vhp_lightning.train``: checks that a chosen sweep plugin is
    installed and that the run dir can be made, then runs the Hydra entry point ``hydra_main``."""
    os.environ["MPLBACKEND"] = "Agg"  # figures are written to files, never shown
    error = _missing_plugin(sys.argv[1:]) or check_run_dir_overrides(sys.argv[1:])
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
        _check_wandb(cfg)
        _absolute_data_paths(cfg)
    except (ValueError, TypeError, WandbLoginError) as err:
        _refuse(err)
    from hydra.errors import InstantiationException
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from vhp_lightning.io.checkpoint import CheckpointError
    from vhp_lightning.io.instantiate import UnsafeConfigError
    from vhp_lightning.module import EvaluationInterrupted, NonFiniteLossError

    try:
        metrics = train(cfg)
    except (CheckpointError, RunDirError, UnsafeConfigError, InstantiationException) as err:
        _refuse(err)
    except EvaluationInterrupted as stop:
        log.error(_evaluation_stopped(cfg, stop))
        sys.exit(128 + stop.signum)
    except NonFiniteLossError as err:
        log.error(f"{err} {_last_good_state(cfg)}")
        sys.exit(1)
    except SIGTERMException as stop:  # SIGTERM, or a first Ctrl-C during fit (SaveOnInterrupt)
        signum = getattr(stop, "signum", signal.SIGTERM)
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        log.error(f"Stopped by {name}; resume with resume=true (same hydra.run.dir) or ckpt_path.")
        sys.exit(128 + signum)
    note = _nll_note(cfg, metrics)
    if note:
        log.info(note)
    key = cfg.get("optimized_metric", "val/loss")  # what a sweeper (Optuna) minimises
    if key not in metrics:
        log.warning(f"optimized_metric={key} was not logged; logged: {', '.join(sorted(metrics))}")
    return metrics.get(key)


if __name__ == "__main__":
    main()
