"""Checkpoint files: atomic writes, safe early-failing loads, and a check that a checkpoint fits."""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, unwritable or from another model."""


def _write(checkpoint: dict[str, Any], f: Any) -> None:
    """Serialise ``checkpoint`` into the open binary file ``f`` (tests make it fail)."""
    torch.save(checkpoint, f)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, then renames it into place.

    A crash, Ctrl-C or full disk during the write leaves the previous checkpoint intact and no
    half-written file behind; a full disk is reported as a ``CheckpointError`` naming the fix.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                _write(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; use the usual mode
            os.replace(tmp, path)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CheckpointError(
                    f"could not write checkpoint {path}: no space left on device ({err}). "
                    f"Nothing was half-written; {path.name} on disk (if any) is the previous, "
                    "intact state. Free disk space (or point hydra.run.dir at a larger disk) and "
                    "resume with resume=true."
                ) from err
            raise


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs); errors name the fix."""
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
    return ckpt


def check_compatible(
    ckpt: Mapping[str, Any],
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike = "checkpoint",
    prefix: str = "model.",
) -> None:
    """Refuse to resume from a checkpoint of another model; the message names the mismatch.

    Compares the stored run config's ``model`` section and ``dataset.data_shape`` with the
    resolved current ``config``, then the names and shapes of the checkpoint's tensors under
    ``prefix`` (the generative model) with those of the freshly built module's ``state_dict``.
    """
    stored = ckpt.get("vhp_config")
    if isinstance(stored, Mapping):
        diffs = _diff(stored.get("model"), config.get("model"), "model")
        stored_shape = (stored.get("dataset") or {}).get("data_shape")
        current_shape = (config.get("dataset") or {}).get("data_shape")
        if stored_shape is not None and list(stored_shape) != list(current_shape or []):
            diffs.append(
                f"dataset.data_shape: checkpoint {list(stored_shape)}, now {current_shape}"
            )
        if diffs:
            raise CheckpointError(
                f"{path} was trained with another model/config; refusing to resume. Differences "
                f"(checkpoint vs this run): {'; '.join(diffs[:8])}"
                + (f"; ... {len(diffs) - 8} more" if len(diffs) > 8 else "")
                + ". Run with the checkpoint's settings (see its run dir's .hydra/config.yaml) "
                "or start fresh with ckpt_path=null."
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
            out += _diff(old.get(key), new.get(key), f"{where}.{key}")
        return out
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return [] if old == new else [f"{where}: checkpoint {old!r}, now {new!r}"]
