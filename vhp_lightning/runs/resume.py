"""Which checkpoint a run continues (``ckpt_path``, ``resume``), and the checks that it fits
this run's config and model before any training step."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vhp_lightning.runs.rundir import RunDirError

log = logging.getLogger(__name__)


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
    last = newest_last(folder)
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


def newest_last(folder: Path) -> Path | None:
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


def last_checkpoint(cfg: DictConfig) -> Path | None:
    """This run's newest ``last*.ckpt``, if it wrote one."""
    with contextlib.suppress(ValueError, OSError):  # no Hydra run dir (tests), unreadable dir
        return newest_last(checkpoint_dir(cfg))
    return None


def check_resume(ckpt: dict[str, Any], config: dict[str, Any], module: Any, path: str) -> None:
    """Refuse a checkpoint of another config or model, or with untrusted or unfitting state
    (``CheckpointError``); warn when a changed key makes the resume no longer bitwise exact."""
    from vhp_lightning.io.checkpoint import check_compatible, numeric_changes
    from vhp_lightning.io.trusted_state import check_optimizer_state, trusted_resume_state

    check_compatible(ckpt, config, module.state_dict(), path=path)
    trusted_resume_state(ckpt, path=path, log_dropped=False)  # Lightning's load logs them
    check_optimizer_state(ckpt, module.configure_optimizers(), path=path)
    changed = numeric_changes(ckpt.get("vhp_config") or {}, config)
    if changed:
        log.warning(
            "Resuming with %s: allowed, but the run is then no longer bitwise equal to an "
            "uninterrupted one (float sums in another order). Keep the checkpoint's values "
            "for an exact resume.",
            "; ".join(changed),
        )
