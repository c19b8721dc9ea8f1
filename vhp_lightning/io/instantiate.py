"""Instantiate a config that came from a file someone else wrote (a shared checkpoint).

A stored config is code: Hydra's ``instantiate`` calls whatever ``_target_`` names. Before
anything is built, ``check_targets`` walks the whole config and refuses every ``_target_`` that is
not on the allow-list, which is derived, never kept by hand:

* every ``_target_`` of the package's own configs (``conf/**/*.yaml``, read once: ``shipped``),
  by role: ``conf/model/`` and ``conf/paper/`` build the model, ``conf/dataset/`` the data, the
  other groups the run (trainer, loggers, callbacks, schemes, optimiser); plus ``LEGACY_TARGETS``,
  classes that only the checkpoints of earlier versions name;
* the classes a user vouches for (docs/extending.md): the environment variable
  ``VHP_TRUSTED_TARGETS`` (``TRUST_ENV``), read at every check, and ``vhp_lightning.load(path,
  trusted=[...])``. Each entry is a class name (``mypkg.schemes.MyScheme``) or a package or module
  ending in ``.*`` (``mypkg.*``) for the classes defined under it.

Only classes are built: a name that resolves to a function (a Lightning helper that writes files,
``pytorch_lightning.core.saving.save_hparams_to_yaml``), ``os.system`` or a name that leads out of
the project through a module attribute (``vhp_lightning.io.checkpoint.os.system``) is refused
before anything of it runs; the shipped names are matched exactly, and a ``mypkg.*`` entry only
admits a class whose ``__module__`` lies under ``mypkg`` (not ``mypkg.subprocess.Popen``).
``safe_instantiate`` builds only the classes of one role (``allowed_targets("model")`` for
``model``, ``allowed_targets("dataset")`` for ``dataset``): the trainer, loggers, callbacks and
optimiser of a stored config are checked, never built. Used by ``vhp_lightning.api`` and
``vhp_lightning.evaluate``; ``tests/test_trust.py`` checks these guarantees.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Collection, Iterator, Mapping
from importlib.resources import files
from typing import Any

import yaml
from hydra._internal.utils import _locate
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers a stored config may use)

# The environment variable that names the user's own classes: comma-separated class names or
# ``package.*`` patterns, e.g. VHP_TRUSTED_TARGETS=mypkg.schemes.MyScheme,mypkg.data.*
TRUST_ENV = "VHP_TRUSTED_TARGETS"
# The config groups (folders of conf/) whose classes build the model / the data; all the other
# groups' classes are run classes, checked in a stored config but never built when it is opened.
ROLE_GROUPS: dict[str, tuple[str, ...]] = {"model": ("model", "paper"), "dataset": ("dataset",)}
# No longer in conf/, but stored by the checkpoints of earlier versions (run classes).
LEGACY_TARGETS: frozenset[str] = frozenset(
    {
        "pytorch_lightning.callbacks.RichProgressBar",  # before StepProgress
        "pytorch_lightning.loggers.CSVLogger",  # before AppendingCSVLogger
    }
)
# Old package name -> new. Earlier versions installed ``callbacks/`` and ``datamodules/`` as
# top-level packages; the checkpoints and run dirs they wrote store ``_target_:
# callbacks.rewo.REWO``. ``current_targets`` renames them.
LEGACY_PACKAGES: dict[str, str] = {
    "callbacks.": "vhp_lightning.callbacks.",
    "datamodules.": "vhp_lightning.datamodules.",
}


def _yaml_targets(node: Any) -> set[str]:
    """Every ``_target_`` value anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        own = {node["_target_"]} if isinstance(node.get("_target_"), str) else set()
        return own.union(*(_yaml_targets(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_yaml_targets(v) for v in node))
    return set()


@functools.cache
def shipped() -> dict[str, frozenset[str]]:
    """The ``_target_`` names of the package's configs by group folder (``"model"``,
    ``"paper"``, ``"optim"``, ...; ``""`` for files at the top of ``conf/``). Read once; no
    module is imported."""
    root = files("vhp_lightning.conf")
    found: dict[str, set[str]] = {}

    def walk(folder: Any, group: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, group or entry.name)
            elif entry.name.endswith(".yaml"):
                names = _yaml_targets(yaml.safe_load(entry.read_text()))
                found.setdefault(group, set()).update(names)

    walk(root, "")
    return {group: frozenset(names) for group, names in sorted(found.items())}


def allowed_targets(role: str | None = None) -> frozenset[str]:
    """The shipped class names a stored config may name: those of ``role`` (``"model"`` or
    ``"dataset"``, the ``ROLE_GROUPS``), or all of them (with ``LEGACY_TARGETS``) for ``None``.
    The user's own classes (``TRUST_ENV``, ``trusted=``) are added by ``check_target``."""
    groups = shipped()
    if role is None:
        return frozenset().union(*groups.values(), LEGACY_TARGETS)
    if role not in ROLE_GROUPS:
        raise ValueError(f"Unknown role {role!r}. Choose one of: {', '.join(ROLE_GROUPS)}.")
    return frozenset().union(*(groups.get(g, frozenset()) for g in ROLE_GROUPS[role]))


def trusted_from_env() -> frozenset[str]:
    """The entries of ``$VHP_TRUSTED_TARGETS`` (comma-separated, blanks dropped)."""
    return frozenset(e.strip() for e in os.environ.get(TRUST_ENV, "").split(",") if e.strip())


def _pattern_root(entry: str) -> str | None:
    """``"mypkg.data"`` for the entry ``"mypkg.data.*"``; None for an exact name."""
    return entry[:-2] if entry.endswith(".*") and len(entry) > 2 else None


def _admitted(target: str, allowed: Collection[str]) -> tuple[bool, str | None]:
    """(whether ``allowed`` names ``target``, the package a ``.*`` entry matched it under)."""
    if target in allowed:
        return True, None
    for entry in allowed:
        root = _pattern_root(entry)
        if root and target.startswith(root + "."):
            return True, root
    return False, None


def current_target(target: Any) -> Any:
    """The current name of a ``_target_`` stored under an old package name
    (``callbacks.rewo.REWO`` -> ``vhp_lightning.callbacks.rewo.REWO``); any other value as is."""
    if isinstance(target, str):
        for old, new in LEGACY_PACKAGES.items():
            if target.startswith(old):
                return new + target[len(old) :]
    return target


def current_targets(config: Any) -> Any:
    """A copy of a stored config (nested dicts and lists) with every ``_target_`` renamed by
    ``current_target``, so a checkpoint of an earlier version loads, evaluates and resumes."""
    if isinstance(config, Mapping):
        return {
            k: current_target(v) if k == "_target_" else current_targets(v)
            for k, v in config.items()
        }
    if isinstance(config, (list, tuple)):
        return [current_targets(v) for v in config]
    return config


class UnsafeConfigError(ValueError):
    """A stored config names a ``_target_`` that is not on the allow-list, or not a class."""


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
    name = target if isinstance(target, str) else "your.module.Class"
    return UnsafeConfigError(
        f"refusing to instantiate {where}={target!r}: {why}; nothing was imported or run. A "
        "stored config may only name the classes of the package's configs (conf/) and the "
        f"classes you trust, never a function. If {name} is your own class, trust it: "
        f"`{TRUST_ENV}={name}` in the environment (comma-separated; `mypkg.*` for a whole "
        f"package; also for vhp_lightning.evaluate) or vhp_lightning.load(path, "
        f"trusted=['{name}']); see docs/extending.md. Only open checkpoints you trust."
    )


def check_target(
    target: Any, where: str = "_target_", allowed: Collection[str] | None = None
) -> None:
    """Raise ``UnsafeConfigError`` unless ``target`` is named by ``allowed`` (default: every
    shipped class, ``allowed_targets()``) or by ``$VHP_TRUSTED_TARGETS`` and resolves to a class.
    The name is checked before anything is imported; a ``pkg.*`` entry admits only a class
    defined under ``pkg``."""
    if not isinstance(target, str):
        raise _refuse(where, target, "a _target_ must be a plain dotted name")
    names = frozenset(allowed_targets() if allowed is None else allowed) | trusted_from_env()
    admitted, root = _admitted(target, names)
    if not admitted:
        raise _refuse(where, target, "it is not on the allow-list")
    try:
        obj = _locate(target)
    except Exception as err:  # any failure to resolve is a refusal
        raise _refuse(where, target, f"it does not resolve ({err})") from err
    if not inspect.isclass(obj):
        raise _refuse(where, target, f"it resolves to a {type(obj).__name__}, not a class")
    module = getattr(obj, "__module__", "") or ""
    if root and not (module == root or module.startswith(root + ".")):
        raise _refuse(where, target, f"it is defined in {module}, outside the trusted {root}.*")


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


def check_targets(
    config: Mapping[str, Any], allowed: Collection[str] | None = None, where: str = ""
) -> None:
    """Check every ``_target_`` anywhere in ``config`` (``check_target``); raise on the first.
    ``where``: the key of ``config`` in the whole config, for the message (e.g. ``model``)."""
    for key, value in _walk(config, where):
        if key.rsplit(".", 1)[-1] == "_target_":
            check_target(value, key, allowed)


def safe_instantiate(
    node: Mapping[str, Any],
    allowed: Collection[str] | None = None,
    where: str = "",
    **kwargs: Any,
) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` after ``check_targets(node, allowed, where)``."""
    plain = to_plain(node)
    check_targets(plain, allowed, where)
    return instantiate(plain, **kwargs)


__all__ = [
    "LEGACY_PACKAGES",
    "LEGACY_TARGETS",
    "ROLE_GROUPS",
    "TRUST_ENV",
    "UnsafeConfigError",
    "allowed_targets",
    "check_target",
    "check_targets",
    "current_target",
    "current_targets",
    "safe_instantiate",
    "shipped",
    "to_plain",
    "trusted_from_env",
]
