"""Instantiate a config that came from a file someone else wrote (a shared checkpoint).

A stored config is code: Hydra's ``instantiate`` calls whatever ``_target_`` names. Before
anything is built, ``check_targets`` walks the whole config and refuses every ``_target_`` that is
not one of the project's own classes or the few libraries its configs use
(``ALLOWED_TARGET_PREFIXES``). The check resolves each name the way Hydra will and also checks the
module the object is *defined* in, so a path such as ``vhp_lightning.checkpoint.os.system`` (a
module attribute that leads out of the project) is refused too. Used by ``vhp_lightning.api`` and
``vhp_lightning.evaluate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from hydra._internal.utils import _locate
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

import vhp_lightning.config  # noqa: F401  (registers the resolvers a stored config may use)

ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "vhp_lightning.",
    "datamodules.",
    "callbacks.",
    "torch.optim.",
    "torch.nn.",
    "pytorch_lightning.",
)


class UnsafeConfigError(ValueError):
    """A stored config names a ``_target_`` outside ``ALLOWED_TARGET_PREFIXES``."""


def _allowed(name: str) -> bool:
    return any(name.startswith(p) for p in ALLOWED_TARGET_PREFIXES)


def _walk(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every ``(dotted key, value)`` under ``node`` (dicts and lists, depth first)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, value
            yield from _walk(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            path = f"{where}[{i}]"
            yield path, value
            yield from _walk(value, path)


def _refuse(where: str, target: Any, why: str) -> UnsafeConfigError:
    return UnsafeConfigError(
        f"refusing to instantiate {where}={target!r}: {why}. A stored config may only build "
        f"objects from {', '.join(ALLOWED_TARGET_PREFIXES)}; nothing was run. Only use "
        "checkpoints you trust, or rebuild the model from your own config."
    )


def check_target(target: Any, where: str = "_target_") -> None:
    """Raise ``UnsafeConfigError`` unless ``target`` names a class or function of an allowed
    package, both as written and where the object it resolves to is defined."""
    if not isinstance(target, str):
        raise _refuse(where, target, "a _target_ must be a plain dotted name")
    if not _allowed(target):
        raise _refuse(where, target, "not an allowed package")
    if any(part.startswith("_") for part in target.split(".")):
        raise _refuse(where, target, "private names are not allowed")
    # Importing an allowed package runs only the project's (or torch's, Lightning's) own code.
    try:
        obj = _locate(target)
    except Exception as err:  # any failure to resolve is a refusal
        raise _refuse(where, target, f"it does not resolve ({err})") from err
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise _refuse(where, target, f"it resolves to a {type(obj).__name__}, not a class")
    module = getattr(obj, "__module__", None) or ""
    if not _allowed(f"{module}."):
        raise _refuse(where, target, f"it resolves to an object defined in {module!r}")


def to_plain(config: Any) -> dict[str, Any]:
    """A stored config (dict or ``DictConfig``) as a plain, resolved dict with no interpolations
    left, so that what ``check_targets`` saw is exactly what ``instantiate`` will build."""
    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping):
        raise UnsafeConfigError(f"a stored config must be a mapping, got {type(config).__name__}")
    plain = OmegaConf.to_container(OmegaConf.create(dict(config)), resolve=True)
    for where, value in _walk(plain, ""):
        if isinstance(value, str) and "${" in value:
            raise UnsafeConfigError(
                f"refusing stored config: {where}={value!r} is an interpolation after resolving. "
                "Checkpoints store resolved configs; this one was edited."
            )
    return plain  # type: ignore[return-value]


def check_targets(config: Mapping[str, Any]) -> None:
    """Check every ``_target_`` anywhere in ``config`` (``check_target``); raise on the first."""
    for where, value in _walk(config, ""):
        if where.rsplit(".", 1)[-1] == "_target_":
            check_target(value, where)


def safe_instantiate(node: Mapping[str, Any], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` after ``check_targets(node)``."""
    plain = to_plain(node)
    check_targets(plain)
    return instantiate(plain, **kwargs)


__all__ = [
    "ALLOWED_TARGET_PREFIXES",
    "UnsafeConfigError",
    "check_target",
    "check_targets",
    "safe_instantiate",
    "to_plain",
]
