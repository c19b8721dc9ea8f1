"""Checkpoint files: atomic writes, safe early-failing loads, and a check that a checkpoint fits."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from vhp_lightning.io.files import atomic_open
from vhp_lightning.io.instantiate import current_targets

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, unwritable or from another model."""


def _write(checkpoint: dict[str, Any], f: Any) -> None:
    """Serialise ``checkpoint`` into the open binary file ``f`` (tests make it fail)."""
    torch.save(checkpoint, f)


# The file through which Lightning's ddp_spawn launcher hands the trained weights from rank 0 back
# to the main process (written, read and removed by the launcher within one run).
SPAWN_HANDOFF = ".temp.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """The trainer's checkpoint I/O: atomic writes, trusted loads, deletions only of its own files.

    * A checkpoint goes to a temporary file in the same folder, then is renamed into place. A
      crash, Ctrl-C or failed write leaves the previous checkpoint intact and no half-written
      file behind. A write that fails (a full disk: ``OSError`` ENOSPC/EDQUOT from Python, or
      torch's ``RuntimeError`` "... file write failed" / "unexpected pos" / "No space left on
      device"; a read-only or vanished folder) is reported as one ``CheckpointError`` naming
      the file.
    * A file Lightning loads (to resume) is read with ``load_checkpoint`` (no code runs) and cut
      to the state a resume may use (``trusted_resume_state``).
    * ``remove_checkpoint`` deletes only a regular ``*.ckpt`` file directly inside ``root`` (the
      run's checkpoint folder); any other path (a folder, a file elsewhere, a URL) is refused
      with a warning and left alone. With ``root=None`` any regular ``*.ckpt`` file may go.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.root = None if root is None else Path(root).resolve()

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        from vhp_lightning.io.trusted_state import trusted_resume_state

        if Path(path).name == SPAWN_HANDOFF:  # the weights a ddp_spawn worker hands back
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        ckpt = trusted_resume_state(load_checkpoint(path), path=str(path))
        continue_cut_epoch(ckpt)
        return ckpt

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        target = Path(str(path))
        resolved = target.resolve() if "://" not in str(path) else None
        ok = (
            resolved is not None
            and resolved.suffix == ".ckpt"
            and target.is_file()
            and not target.is_symlink()
            and (self.root is None or resolved.parent == self.root or target.name == SPAWN_HANDOFF)
        )
        if not ok:
            log.warning(
                "Not deleting %s: only this run's own checkpoint files (*.ckpt in %s) are ever "
                "deleted.",
                path,
                self.root or "the checkpoint folder",
            )
            return
        target.unlink()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        try:
            with atomic_open(path, "wb") as f:
                _write(checkpoint, f)
        except BaseException as err:
            if isinstance(err, (OSError, RuntimeError)) and _is_write_failure(err):
                raise CheckpointError(_write_failure_message(path, err)) from err
            raise


# How torch's stream writer reports a full disk (its RuntimeError, not the OS's OSError).
_FULL_DISK = (
    "no space left on device",
    "disk quota exceeded",
    "file write failed",
    "unexpected pos",  # torch's zip writer when the device is full mid-file
)


def _is_write_failure(err: BaseException) -> bool:
    """An ``OSError``, or torch's ``RuntimeError`` for a failed write."""
    text = str(err).lower()
    return isinstance(err, OSError) or any(s in text for s in (*_FULL_DISK, "failed writing"))


def _write_failure_message(path: Path, err: BaseException) -> str:
    """The one error of a failed checkpoint write: the file, why, that nothing was lost, the fix."""
    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
        s in str(err).lower() for s in _FULL_DISK
    )
    if full:
        why, fix = "no space left on device", "Free disk space (or use a larger disk)"
    else:
        why, fix = "the write failed", f"Make {path.parent} writable (or use another folder)"
    return (
        f"could not write checkpoint {path}: {why} ({type(err).__name__}: {err}). Nothing was "
        f"half-written; {path.name} on disk (if any) is the previous, intact state. {fix} and "
        "resume with resume=true."
    )


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs); errors name the fix. The
    stored run config's ``_target_``s are renamed to the current packages (``current_targets``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Pass an existing file, e.g. "
            "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # a torch zip archive or a (legacy) pickle
        raise CheckpointError(
            f"{path} is not a checkpoint file (it starts with {head!r}, not a torch archive). "
            "Pass the .ckpt a run wrote, e.g. outputs/<date>/<time>/checkpoints/last.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects that are not plain tensors/containers "
            f"and unpickling them could run code ({err}). Only load checkpoints you trust, "
            "and re-save them with this version of vhp-lightning."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err}). Use an "
            "earlier checkpoint of the run, or start fresh with ckpt_path=null."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry).")
    if isinstance(ckpt.get("vhp_config"), Mapping):
        ckpt["vhp_config"] = current_targets(ckpt["vhp_config"])
    return ckpt


def continue_cut_epoch(ckpt: dict[str, Any]) -> bool:
    """Make a checkpoint written when ``max_steps`` ended training in the middle of an epoch
    resume *that* epoch, as one written mid-epoch (SIGTERM, the step cadence) does.

    Lightning counts the cut epoch as completed when fit ends, while the train loader's state
    holds its remaining batches: a run extended with a larger ``trainer.max_steps`` would number
    every later epoch one higher than a straight run, so ``check_val_every_n_epoch`` would
    validate after other steps (and validation draws from the global RNG). The epoch counters go
    back by one; the batch counters and the loader state are left as written. True if changed.
    """
    fit = (ckpt.get("loops") or {}).get("fit_loop") or {}
    epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    if not isinstance(epochs, dict) or not isinstance(batches, dict):
        return False
    total, current = epochs.get("total") or {}, batches.get("current") or {}
    cut = (
        not batches.get("is_last_batch", True)
        and current.get("completed", 0) > 0
        and total.get("completed") == total.get("started")
        and total.get("processed") == total.get("started")
        and total.get("completed", 0) > 0
    )
    if not cut:
        return False
    for part in ("total", "current"):
        for key in ("completed", "processed"):
            epochs[part][key] -= 1
    ckpt["epoch"] = max(0, int(ckpt.get("epoch", 1)) - 1)
    return True


# The layout of the checkpoints this version writes (``vhp_format``; docs/reliability.md): one
# optimiser with a theta/phi and a Theta/Phi parameter group, torchdata's loader state, the
# beta-scheme's state under its class name, Table 1's snapshot rows under ``PendulumMetrics``.
# Format 1 (no key, or 1) kept those rows under ``PendulumFigures``.
CHECKPOINT_FORMAT = 2


def check_format(ckpt: Mapping[str, Any], path: str = "checkpoint") -> None:
    """Refuse to resume a checkpoint of another layout (``CheckpointError``). Weights of an older
    checkpoint still load for evaluation (``vhp_lightning.load``); only a resume needs this."""
    version = ckpt.get("vhp_format", 1)
    states = ckpt.get("optimizer_states")
    loop = ((ckpt.get("loops") or {}).get("fit_loop") or {}).get("state_dict") or {}
    loaders = loop.get("combined_loader")
    old_loader = isinstance(loaders, list) and any(
        isinstance(s, Mapping) and {"epoch_start", "now", "yielded"} <= set(s) for s in loaders
    )
    two_optimisers = isinstance(states, list) and len(states) == 2
    if version == CHECKPOINT_FORMAT and not old_loader and not two_optimisers:
        return
    raise CheckpointError(
        f"{path} is a checkpoint of another format ("
        + (
            "written before 2026-12-02: two optimisers and the old train-loader state"
            if old_loader or two_optimisers
            else f"vhp_format {version!r}"
        )
        + f"); this version resumes only format {CHECKPOINT_FORMAT}. Its weights still load "
        "for evaluation (vhp_lightning.load, vhp_lightning.evaluate); to continue training it, "
        "resume with the vhp-lightning version that wrote it, or start a new run."
    )


# Config keys a resumed run may change: run length, evaluation cadence, where the data and outputs
# live, logging and callbacks (observers). Everything else (model, optimiser, beta scheme, data,
# seed, batch size, devices, precision, ...) must equal the checkpoint's: the restored state
# would silently keep the old values while the run's stored config claimed the new ones.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "ckpt_path",
    "optimized_metric",
    "tags",
    "resume",
    "test",
    "nll_samples",
    "test_nll_images",
    "log_parts_every_n_steps",
    "compile",
    "module",  # conf/module/: built from the four keys above (checkpoints before it lack it)
    "num_threads",
    "flush_denormal",
    "data_dir",
    "run_name",
    "logger",
    "callbacks",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.min_steps",
    "trainer.min_epochs",
    "trainer.check_val_every_n_epoch",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.num_sanity_val_steps",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.default_root_dir",
    "trainer.profiler",
    "trainer.accelerator",
    "dataset.data_dir",
    "dataset.root",
    "dataset.num_workers",
    "dataset.eval_batch_size",
    "dataset.download",
)


# Of the keys a resume may change, those that change the numbers (the order of float sums, a
# compiled graph, denormals, the device): a resume that changes one is announced, since it is then
# no longer bitwise equal to an uninterrupted run.
RESUME_CHANGES_NUMBERS: tuple[str, ...] = (
    "num_threads",
    "compile",
    "flush_denormal",
    "trainer.accelerator",
)


def numeric_changes(stored: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint A, now B`` for each ``RESUME_CHANGES_NUMBERS`` key that differs."""
    return [
        d
        for d in _diff(stored, config, "")
        if any(d.split(":", 1)[0] == k for k in RESUME_CHANGES_NUMBERS)
    ]


# The keys the model's nets are read from (`model.encoder: ${paper.nets.encoder}`; in run configs
# written before conf/paper/nets/, `experiment_nets`) are not compared themselves: the resolved
# nets under `model.` are. So a checkpoint of an earlier version resumes.
NET_SOURCES: tuple[str, ...] = ("paper.nets", "experiment_nets")


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in (*RESUME_MAY_CHANGE, *NET_SOURCES))


def config_differences(stored: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint A, now B`` for every config leaf outside ``RESUME_MAY_CHANGE`` that
    differs between a checkpoint's stored run config and this run's (sorted by key)."""
    return [d for d in _diff(stored, config, "") if not _may_change(d.split(":", 1)[0])]


def check_compatible(
    ckpt: Mapping[str, Any],
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike = "checkpoint",
    prefix: str = "model.",
) -> None:
    """Refuse to resume from a checkpoint of another model or config; the message lists every
    difference and the fix.

    Compares the stored run config with the resolved current ``config`` in every key except the
    run-length/IO keys of ``RESUME_MAY_CHANGE`` (a changed learning rate or beta scheme would be
    silently overridden by the restored state), then the names and shapes of the checkpoint's
    tensors under ``prefix`` (the generative model) with those of the freshly built module's
    ``state_dict``.
    """
    stored = ckpt.get("vhp_config")
    if isinstance(stored, Mapping):
        diffs = config_differences(stored, config)
        if diffs:
            raise CheckpointError(
                f"{path} was trained with another model/config; refusing to resume. Differences "
                f"(checkpoint vs this run): {'; '.join(diffs[:8])}"
                + (f"; ... {len(diffs) - 8} more" if len(diffs) > 8 else "")
                + ". A resume continues the checkpoint's run: run with its settings (see its run "
                "dir's .hydra/config.yaml), or start a new run with ckpt_path=null (and "
                "resume=false) in another hydra.run.dir. Only run-length and output keys may "
                "change on resume (trainer.max_steps, trainer.max_epochs, logger, callbacks, "
                "test, nll_samples, data_dir, ...; see RESUME_MAY_CHANGE in "
                "vhp_lightning/io/checkpoint.py)."
            )
    saved = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    mismatch = weight_mismatch(saved, state_dict)
    if mismatch:
        raise CheckpointError(
            f"{path} does not fit this model ({mismatch}). It is from another model or "
            "config; resume with the settings it was trained with, or start fresh with "
            "ckpt_path=null."
        )


def weight_mismatch(saved: Mapping[str, Any], own: Mapping[str, torch.Tensor]) -> str:
    """How the tensors of a checkpoint's state dict ``saved`` differ from a model's ``own``, for
    an error message: ``shape mismatch <key>: checkpoint (a, b), model (c, d); ... | missing
    <keys> | unexpected <keys>`` (at most 5 keys of each, then ``(+N more)``); ``""`` when the
    names and shapes all match."""
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(v.shape)}"
        for k, v in own.items()
        if k in saved and torch.is_tensor(saved[k]) and saved[k].shape != v.shape
    ]
    parts = []
    for label, items, sep in (
        ("shape mismatch", shapes, "; "),
        ("missing", missing, ", "),
        ("unexpected", unexpected, ", "),
    ):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{label} {sep.join(items[:5])}{more}")
    return " | ".join(parts)


def _diff(old: Any, new: Any, where: str) -> list[str]:
    """``where.key: checkpoint A, now B`` for every leaf that differs between two configs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return out
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return [] if old == new else [f"{where}: checkpoint {old!r}, now {new!r}"]
