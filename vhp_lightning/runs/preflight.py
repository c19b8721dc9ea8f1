"""Checks before any work, none of which imports torch: a wrong command is refused in about a
second with the fix, and nothing is written (W&B login, sweep plugins, the run dir overrides);
and relative data paths made absolute for the config a checkpoint stores."""

from __future__ import annotations

import contextlib
import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class WandbLoginError(RuntimeError):
    """``logger=wandb`` without a W&B login and without offline mode."""


def check_wandb(cfg: DictConfig) -> None:
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


def absolute_data_paths(cfg: DictConfig) -> None:
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


# Overrides that select a Hydra plugin of the `sweep` extra, and the plugin's module.
SWEEP_PLUGINS = {
    "hparams_search=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=parallel": "hydra_plugins.hydra_joblib_launcher",
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
}


def missing_plugin(args: list[str]) -> str | None:
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


def job_gpus(
    launcher_target: str, job_num: int, devices: Any, accelerator: str, n_gpus: int
) -> list[int] | None:
    """One GPU per job of a local parallel multirun (``hydra/launcher=parallel``, Hydra's joblib
    launcher): job k trains on GPU ``k mod n_gpus`` when the trainer asks for one device
    (``trainer.devices: 1``) on ``auto``/``gpu``/``cuda`` and the machine has more than one GPU;
    otherwise ``None`` (the trainer's own setting). Round-robin: with more jobs at once than GPUs,
    jobs share them evenly."""
    if "joblib" not in launcher_target.lower() or n_gpus < 2:
        return None
    if devices != 1 or str(accelerator) not in ("auto", "gpu", "cuda"):
        return None
    return [job_num % n_gpus]


def parallel_job_gpus(cfg: Any) -> list[int] | None:
    """``job_gpus`` for this Hydra job (``None`` outside a multirun or without CUDA)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hydra_cfg: Any = HydraConfig.get()  # a DictConfig at run time (typed as HydraConf)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    import torch

    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "")
    trainer = cfg.get("trainer") or {}
    return job_gpus(
        target,
        int(OmegaConf.select(hydra_cfg, "job.num", default=0) or 0),
        trainer.get("devices", 1),
        trainer.get("accelerator", "auto"),
        torch.cuda.device_count() if torch.cuda.is_available() else 0,
    )
