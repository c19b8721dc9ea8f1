"""Checkpoint files: atomic writes, safe early-failing loads, and a check that a checkpoint fits."""

from __future__ import annotations

import errno
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


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, unwritable or from another model."""


def _write(checkpoint: dict[str, Any], f: Any) -> None:
    """Serialise ``checkpoint`` into the open binary file ``f`` (tests make it fail)."""
    torch.save(checkpoint, f)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, then renames it into place.

    A crash, Ctrl-C or failed write during the write leaves the previous checkpoint intact and no
    half-written file behind. A write that fails (a full disk: ``OSError`` ENOSPC/EDQUOT from
    Python, or torch's ``RuntimeError`` "... file write failed" / "No space left on device";
    a read-only or vanished folder) is reported as one ``CheckpointError`` naming the file.
    """

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
_FULL_DISK = ("no space left on device", "disk quota exceeded", "file write failed")


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


def merge_optimizer_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One optimiser ``state_dict`` whose parameter groups are those of ``states`` in order.

    The state of optimisers over disjoint parameter lists ``[A], [B]`` becomes the state of one
    optimiser over the parameter groups ``[A, B]``: group and per-parameter entries are kept,
    the parameter indices of each later optimiser are shifted past the earlier ones'. Loading
    it into ``Opt([{"params": A}, {"params": B}])`` continues exactly as the separate ones would.
    """
    merged: dict[str, Any] = {"state": {}, "param_groups": []}
    offset = 0
    for sd in states:
        ids = [i for group in sd["param_groups"] for i in group["params"]]
        shift = {i: offset + k for k, i in enumerate(ids)}
        merged["state"].update({shift[i]: v for i, v in sd["state"].items()})
        merged["param_groups"] += [
            {**g, "params": [shift[i] for i in g["params"]]} for g in sd["param_groups"]
        ]
        offset += len(ids)
    return merged


# The train loader's state as our own loader wrote it before torchdata's StatefulDataLoader.
_OLD_LOADER_KEYS = {"epoch_start", "now", "yielded"}


def drop_old_loader_state(checkpoint: dict[str, Any]) -> bool:
    """Remove a train-loader state of the pre-torchdata format from a Lightning checkpoint (the
    ``combined_loader`` entry of the fit loop), which ``StatefulDataLoader`` would refuse with an
    ``AssertionError``; Lightning then starts the loader's epoch afresh. True if one was removed.
    """
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    states = (loop.get("state_dict") or {}).get("combined_loader")
    old = isinstance(states, list) and any(
        isinstance(s, dict) and s.keys() >= _OLD_LOADER_KEYS for s in states
    )
    if old:
        del loop["state_dict"]["combined_loader"]
    return old


# Config keys a resumed run may change: run length, evaluation cadence, where the data and outputs
# live, logging and callbacks (observers). Everything else (model, optimiser, beta scheme, data,
# seed, batch size, devices, precision, ...) must equal the checkpoint's: the restored state
# would silently keep the old values while the run's stored config claimed the new ones.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "ckpt_path",
    "resume",
    "test",
    "nll_samples",
    "test_nll_images",
    "log_parts_every_n_steps",
    "compile",
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
    missing = sorted(set(state_dict) - set(saved))
    unexpected = sorted(set(saved) - set(state_dict))
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in saved and torch.is_tensor(saved[k]) and saved[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [f"shape mismatch {'; '.join(shapes[:5])}"] if shapes else []
        parts += [f"missing {', '.join(missing[:5])}"] if missing else []
        parts += [f"unexpected {', '.join(unexpected[:5])}"] if unexpected else []
        raise CheckpointError(
            f"{path} does not fit this model ({' | '.join(parts)}). It is from another model or "
            "config; resume with the settings it was trained with, or start fresh with "
            "ckpt_path=null."
        )


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
