"""What a resume takes from a checkpoint file: the tensors and the state this project defines,
each checked against what this run builds; nothing else.

Lightning restores, besides the weights and the optimiser, every stored callback and loop state.
A shared or edited checkpoint can carry paths (``ModelCheckpoint``'s ``last_model_path`` is
*deleted* at its next save), counts, generator states and optimiser hyperparameters. So:

* ``trusted_resume_state`` (called on every file Lightning loads, ``AtomicCheckpointIO``) keeps only
  the top-level entries Lightning and this project write, drops every ``ModelCheckpoint`` state
  (its paths and scores belong to the run that wrote it; this run's checkpoint callback starts
  empty, so it never deletes a file it did not write) and checks the loop counters;
* ``check_optimizer_state`` (called by ``train`` before fitting) compares the stored optimiser
  with the one this run builds: groups, parameter counts, hyperparameters, moment shapes;
* our callbacks and the resumable train loader check their own states in ``load_state_dict``
  (``BetaScheme``, ``RNGStateCallback``, ``LogHistory``, ``datamodules.resumable``).

Every refusal is a ``CheckpointError`` naming the file, the entry and the fix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from vhp_lightning.io.config_values import non_negative_int

log = logging.getLogger(__name__)

# The top-level entries Lightning writes for our module and trainer, and our own two.
LIGHTNING_KEYS = frozenset(
    {
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
        "loops",
        "callbacks",
        "optimizer_states",
        "lr_schedulers",
    }
)
PROJECT_KEYS = frozenset({"vhp_config", "vhp_beta", "vhp_format", "vhp_wall_s"})
FIX = "Use a checkpoint written by this run (or one you trust), or start fresh with ckpt_path=null."


class UntrustedStateError(ValueError):
    """A stored state entry has the wrong structure, type or range (the message names it)."""


def trusted_resume_state(
    ckpt: dict[str, Any], path: str = "checkpoint", log_dropped: bool = True
) -> dict[str, Any]:
    """The entries of a loaded checkpoint that a resume may use, checked; changes ``ckpt`` in place.

    Unknown top-level entries and every ``ModelCheckpoint`` state are dropped (logged unless
    ``log_dropped`` is false: ``train``'s check before fitting reads the same file that
    Lightning then loads and logs); the step counters, the loop progress and the stored
    beta-scheme phase must be plain non-negative numbers, else ``CheckpointError``.
    """
    from vhp_lightning.io.checkpoint import CheckpointError, check_format

    check_format(ckpt, path)
    dropped = sorted(str(k) for k in ckpt if k not in LIGHTNING_KEYS | PROJECT_KEYS)
    for key in dropped:
        del ckpt[key]
    callbacks = ckpt.get("callbacks")
    if callbacks is not None and not isinstance(callbacks, dict):
        raise CheckpointError(f"{path}: 'callbacks' is a {type(callbacks).__name__}, not a dict")
    for key in [k for k in callbacks or {} if str(k).startswith("ModelCheckpoint")]:
        del callbacks[key]  # type: ignore[union-attr]  # its paths: deleted or overwritten
        dropped.append(f"callbacks[{key!r}]")
    if dropped and log_dropped:
        log.info("Not restored from %s (not state this run needs): %s", path, ", ".join(dropped))
    try:
        steps = check_count(ckpt.get("global_step", 0), "global_step")
        check_count(ckpt.get("epoch", 0), "epoch")
        _check_loops(ckpt.get("loops"), steps)
        beta = ckpt.get("vhp_beta")
        if beta is not None:
            check_beta_state(beta, "vhp_beta")
        if "vhp_wall_s" in ckpt:
            check_seconds(ckpt["vhp_wall_s"], "vhp_wall_s")
    except UntrustedStateError as err:
        raise CheckpointError(f"{path}: {err}. {FIX}") from None
    return ckpt


def check_count(value: Any, name: str, upper: int | None = None) -> int:
    """``value`` as a plain ``int`` in ``[0, upper]`` (``non_negative_int``), else
    ``UntrustedStateError``."""
    try:
        value = non_negative_int(name, value, fix="")  # the caller adds the fix: FIX
    except ValueError as err:
        raise UntrustedStateError(str(err)) from None
    if upper is not None and value > upper:
        raise UntrustedStateError(f"{name} must be <= {upper}, got {value}")
    return value


def check_seconds(value: Any, name: str) -> float:
    """A stored duration: a finite number of seconds in [0, 10 years], else
    ``UntrustedStateError``."""
    finite = (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    )
    if not finite or not 0 <= value <= 3.2e8:
        raise UntrustedStateError(
            f"{name} must be a number of seconds in [0, 3.2e8], got {value!r}"
        )
    return float(value)


def check_beta_state(state: Any, name: str) -> None:
    """A stored ``{"beta": float, "train_prior": bool, ...}``: beta finite in (0, 1e12]."""
    if not isinstance(state, Mapping):
        raise UntrustedStateError(f"{name} must be a dict, got {type(state).__name__}")
    beta = state.get("beta")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
        raise UntrustedStateError(f"{name}['beta'] must be a finite number, got {beta!r}")
    if not 0 < beta <= 1e12:
        raise UntrustedStateError(f"{name}['beta'] must lie in (0, 1e12], got {beta}")
    if not isinstance(state.get("train_prior"), bool):
        raise UntrustedStateError(
            f"{name}['train_prior'] must be true or false, got {state.get('train_prior')!r}"
        )


def _check_loops(loops: Any, global_step: int) -> None:
    """Every leaf of the fit loop's progress is a bool or an int >= 0 (the loader's state is
    checked by the loader itself); manual optimisation counts ``global_step`` optimiser steps."""
    if loops is None:
        return
    if not isinstance(loops, Mapping):
        raise UntrustedStateError(f"'loops' must be a dict, got {type(loops).__name__}")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if where.endswith("state_dict") and k == "combined_loader":
                    continue  # the train loader's own state: datamodules/resumable.py checks it
                walk(v, f"{where}.{k}")
        elif not isinstance(node, bool):
            check_count(node, where)

    walk(loops, "loops")
    fit = loops.get("fit_loop") or {}
    done = (
        fit.get("epoch_loop.manual_optimization.optim_step_progress", {})
        .get("total", {})
        .get("completed")
    )
    if done is not None and done != global_step:
        raise UntrustedStateError(
            f"loops: {done} optimiser steps completed, but global_step is {global_step}"
        )


def check_optimizer_state(
    ckpt: Mapping[str, Any], optimizer: torch.optim.Optimizer, path: str = "checkpoint"
) -> None:
    """The stored optimiser state fits ``optimizer`` (built by this run from its config): the same
    number of parameter groups and parameters per group, the same hyperparameters (a stored lr
    would otherwise silently replace the configured one), moments shaped like the parameters."""
    from vhp_lightning.io.checkpoint import CheckpointError

    states = ckpt.get("optimizer_states")
    if states is None:
        return
    fresh = optimizer.state_dict()["param_groups"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    try:
        if not isinstance(states, list) or len(states) != 1 or not isinstance(states[0], Mapping):
            raise UntrustedStateError("optimizer_states must hold one optimiser's state")
        groups, state = states[0].get("param_groups"), states[0].get("state")
        if not isinstance(groups, list) or len(groups) != len(fresh):
            raise UntrustedStateError(
                f"the optimiser has {len(fresh)} parameter group(s), the checkpoint "
                f"{len(groups) if isinstance(groups, list) else groups!r}"
            )
        for i, (old, new) in enumerate(zip(groups, fresh, strict=True)):
            if not isinstance(old, Mapping) or list(old.get("params", ())) != new["params"]:
                raise UntrustedStateError(f"parameter group {i} holds other parameters")
            diffs = [
                f"{k}: checkpoint {old.get(k)!r}, this run {v!r}"
                for k, v in new.items()
                # None: a default the optimiser fills in at its first step (foreach, fused)
                if k != "params" and v is not None and _differs(old.get(k), v)
            ]
            if diffs:
                raise UntrustedStateError(
                    f"parameter group {i} has other hyperparameters ({'; '.join(diffs)})"
                )
        if not isinstance(state, Mapping):
            raise UntrustedStateError("optimizer_states[0]['state'] must be a dict")
        for index, entry in state.items():
            check_count(index, "optimizer state index", upper=len(params) - 1)
            if not isinstance(entry, Mapping):
                raise UntrustedStateError(f"optimizer state {index} must be a dict")
            for name, value in entry.items():
                if not torch.is_tensor(value) or value.dim() == 0:
                    continue  # the step count (a 0-d tensor) or a flag
                if value.shape != params[index].shape:
                    raise UntrustedStateError(
                        f"optimizer state {index}[{name!r}] has shape {tuple(value.shape)}, its "
                        f"parameter {tuple(params[index].shape)}"
                    )
    except UntrustedStateError as err:
        raise CheckpointError(f"{path}: {err}. {FIX}") from None


def _differs(old: Any, new: Any) -> bool:
    """Hyperparameters compare as values (a stored tuple may come back as a list)."""
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)
    if torch.is_tensor(old) or torch.is_tensor(new):
        return not (torch.is_tensor(old) and torch.is_tensor(new) and torch.equal(old, new))
    return bool(old != new)


def check_like(value: Any, reference: Any, where: str) -> None:
    """``value`` has the structure of ``reference`` (a state this run produced itself): the same
    dict keys, list lengths and leaf types, tensors of the same dtype and shape, ints >= 0."""
    if isinstance(reference, Mapping):
        if not isinstance(value, Mapping) or set(value) != set(reference):
            got = sorted(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
            want = sorted(map(str, reference))
            raise UntrustedStateError(f"{where} must have keys {want}, got {got}")
        for k in reference:
            check_like(value[k], reference[k], f"{where}[{k!r}]")
    elif isinstance(reference, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(reference):
            raise UntrustedStateError(f"{where} must be a list of {len(reference)} entries")
        for i, (v, r) in enumerate(zip(value, reference, strict=True)):
            check_like(v, r, f"{where}[{i}]")
    elif torch.is_tensor(reference):
        same = torch.is_tensor(value) and (value.dtype, value.shape) == (
            reference.dtype,
            reference.shape,
        )
        if not same:
            raise UntrustedStateError(
                f"{where} must be a {reference.dtype} tensor of shape {tuple(reference.shape)}"
            )
    elif isinstance(reference, bool):
        if not isinstance(value, bool):
            raise UntrustedStateError(f"{where} must be true or false, got {value!r}")
    elif isinstance(reference, int):
        check_count(value, where)
    elif isinstance(reference, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UntrustedStateError(f"{where} must be a number, got {value!r}")
    elif reference is None:
        if value is not None and not isinstance(value, (int, float, str)):
            raise UntrustedStateError(f"{where} must be empty or a plain value, got {value!r}")
    elif type(value) is not type(reference):
        raise UntrustedStateError(
            f"{where} must be a {type(reference).__name__}, got {type(value).__name__}"
        )
