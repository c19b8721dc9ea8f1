"""Instantiate a config that came from a file someone else wrote (a shared checkpoint).

A stored config is code: Hydra's ``instantiate`` calls whatever ``_target_`` names. Before
anything is built, ``check_targets`` walks the whole config and refuses every ``_target_`` that is
not on an explicit list of the classes the project's own configs (``conf/``) use:
``ALLOWED_TARGETS``. No prefix is trusted and no function is allowed, so a Lightning helper that
writes files (``pytorch_lightning.core.saving.save_hparams_to_yaml``), ``os.system`` or a module
attribute leading out of the project (``vhp_lightning.io.checkpoint.os.system``) are all refused
before anything is imported or run. ``safe_instantiate`` builds only the classes of one role
(``MODEL_TARGETS`` for ``model``, ``DATA_TARGETS`` for ``dataset``): the trainer, loggers,
callbacks and optimiser of a stored config are checked, never built. Used by ``vhp_lightning.api``
and ``vhp_lightning.evaluate``; ``tests/test_trust.py`` keeps the list equal to what ``conf/`` uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from hydra._internal.utils import _locate
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

import vhp_lightning.io.config  # noqa: F401  (registers the resolvers a stored config may use)

# The classes the project's configs build (conf/**/*.yaml), by role; nothing else is trusted.
MODEL_TARGETS: frozenset[str] = frozenset(
    {
        "vhp_lightning.models.iwae.IWAE",
        "vhp_lightning.models.iwae.IWAE2",
        "vhp_lightning.models.vae.VAE",
        "vhp_lightning.models.vampprior.VampPrior",
        "vhp_lightning.models.vhp.VHP",
        "vhp_lightning.nets.conv.ConvDecoder",
        "vhp_lightning.nets.conv.ConvEncoder",
        "vhp_lightning.nets.conv.GatedConvDecoder",
        "vhp_lightning.nets.conv.GatedConvEncoder",
        "vhp_lightning.nets.gated.GatedGaussianMLP",
        "vhp_lightning.nets.likelihoods.BernoulliLikelihood",
        "vhp_lightning.nets.likelihoods.GaussianLikelihood",
        "vhp_lightning.nets.mlp.GaussianMLP",
        "vhp_lightning.nets.mlp.MLP",
    }
)
DATA_TARGETS: frozenset[str] = frozenset(
    {
        "vhp_lightning.datamodules.cmu_mocap.CMUMocapDataModule",
        "vhp_lightning.datamodules.image_folder.ImageFolderDataModule",
        "vhp_lightning.datamodules.image_folder.ShapesDataModule",
        "vhp_lightning.datamodules.mnist.FashionMNISTDataModule",
        "vhp_lightning.datamodules.mnist.MNISTDataModule",
        "vhp_lightning.datamodules.mnist.OmniglotDataModule",
        "vhp_lightning.datamodules.mnist.StaticMNISTDataModule",
        "vhp_lightning.datamodules.pendulum.PendulumDataModule",
    }
)
# In a stored config but never built when a checkpoint is opened (only training builds them).
RUN_TARGETS: frozenset[str] = frozenset(
    {
        "vhp_lightning.callbacks.figures.PendulumFigures",
        "vhp_lightning.callbacks.figures.RunFigures",
        "vhp_lightning.callbacks.geco.GECO",
        "vhp_lightning.callbacks.image_grids.ImageGrids",
        "vhp_lightning.callbacks.interpolation.InterpolationAnalysis",
        "vhp_lightning.callbacks.progress.PartsSummary",
        "vhp_lightning.callbacks.progress.StepProgress",
        "vhp_lightning.callbacks.rewo.REWO",
        "vhp_lightning.callbacks.rewo_alt.REWOAlt",
        "vhp_lightning.callbacks.run_state.AppendingCSVLogger",
        "vhp_lightning.callbacks.run_state.RNGStateCallback",
        "vhp_lightning.callbacks.run_state.SaveOnInterrupt",
        "vhp_lightning.callbacks.schedules.ConstantBeta",
        "vhp_lightning.callbacks.schedules.WarmUp",
        "pytorch_lightning.Trainer",
        "pytorch_lightning.callbacks.ModelCheckpoint",
        "pytorch_lightning.callbacks.RichProgressBar",  # in checkpoints before StepProgress
        "pytorch_lightning.loggers.CSVLogger",  # in checkpoints written before AppendingCSVLogger
        "pytorch_lightning.loggers.TensorBoardLogger",
        "pytorch_lightning.loggers.WandbLogger",
        "torch.optim.Adam",
    }
)
ALLOWED_TARGETS: frozenset[str] = MODEL_TARGETS | DATA_TARGETS | RUN_TARGETS
# Old package name -> new. Earlier versions installed ``callbacks/`` and ``datamodules/`` as
# top-level packages; the checkpoints and run dirs they wrote store ``_target_:
# callbacks.rewo.REWO``. ``current_targets`` renames them.
LEGACY_PACKAGES: dict[str, str] = {
    "callbacks.": "vhp_lightning.callbacks.",
    "datamodules.": "vhp_lightning.datamodules.",
}


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
    """A stored config names a ``_target_`` that is not on the allow-list (``ALLOWED_TARGETS``)."""


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
        f"refusing to instantiate {where}={target!r}: {why}; nothing was imported or run. A "
        "stored config may only name the classes the project's configs use "
        "(vhp_lightning.io.instantiate.ALLOWED_TARGETS), never a function. Only open "
        "checkpoints you trust; for your own class pass vhp_lightning.load(path, "
        "trusted=['your.module.Class']), or rebuild the model from your own config."
    )


def check_target(
    target: Any, where: str = "_target_", allowed: Collection[str] = ALLOWED_TARGETS
) -> None:
    """Raise ``UnsafeConfigError`` unless ``target`` is one of the ``allowed`` names exactly and
    resolves to a class (the name is checked before anything is imported)."""
    if not isinstance(target, str):
        raise _refuse(where, target, "a _target_ must be a plain dotted name")
    if target not in allowed:
        raise _refuse(where, target, "it is not on the allow-list")
    try:
        obj = _locate(target)
    except Exception as err:  # any failure to resolve is a refusal
        raise _refuse(where, target, f"it does not resolve ({err})") from err
    if not inspect.isclass(obj):
        raise _refuse(where, target, f"it resolves to a {type(obj).__name__}, not a class")


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
    config: Mapping[str, Any], allowed: Collection[str] = ALLOWED_TARGETS, where: str = ""
) -> None:
    """Check every ``_target_`` anywhere in ``config`` (``check_target``); raise on the first.
    ``where``: the key of ``config`` in the whole config, for the message (e.g. ``model``)."""
    for key, value in _walk(config, where):
        if key.rsplit(".", 1)[-1] == "_target_":
            check_target(value, key, allowed)


def safe_instantiate(
    node: Mapping[str, Any],
    allowed: Collection[str] = ALLOWED_TARGETS,
    where: str = "",
    **kwargs: Any,
) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` after ``check_targets(node, allowed, where)``."""
    plain = to_plain(node)
    check_targets(plain, allowed, where)
    return instantiate(plain, **kwargs)


__all__ = [
    "ALLOWED_TARGETS",
    "DATA_TARGETS",
    "LEGACY_PACKAGES",
    "MODEL_TARGETS",
    "RUN_TARGETS",
    "UnsafeConfigError",
    "check_target",
    "check_targets",
    "current_target",
    "current_targets",
    "safe_instantiate",
    "to_plain",
]
