"""Config plumbing: resolvers, instantiating config groups, early validation, secret redaction."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vhp_lightning.io.config_values import positive_int_or_none

# Config keys whose values are secrets: never written to saved configs, checkpoints or logs.
SECRET_KEY = re.compile(r"key|token|secret|passw(or)?d", re.IGNORECASE)
REDACTED = "<redacted>"


def _prod(values: Any) -> int:
    """``${prod:${dataset.data_shape}}`` -> the number of data dimensions, e.g. 1*16*16 = 256."""
    return int(math.prod(int(v) for v in values))


def _run_label(base: str, overrides: Any = None) -> str:
    """``${run_label:<dataset>-<model>-<optim>,${hydra:job.override_dirname}}`` -> the base name,
    then the job's overrides if any: ``pendulum-vhp-rewo optim.kappa=0.05``."""
    return f"{base} {overrides}" if overrides else str(base)


def _sweep_group() -> str | None:
    """``${sweep_group:}`` -> the sweep dir of a multirun job (its W&B group), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def register_resolvers() -> None:
    """Register the resolvers our configs use (idempotent)."""
    for name, fn in (("prod", _prod), ("run_label", _run_label), ("sweep_group", _sweep_group)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry with a ``_target_`` of a dict-shaped group (callbacks, logger)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def validate(cfg: DictConfig) -> None:
    """Checks that need no model or data: fail before anything expensive starts."""
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    resume = cfg.get("resume", False)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be true or false, got {resume!r}")
    if resume and cfg.get("ckpt_path") not in (None, "last"):
        raise ValueError(
            f"resume=true and ckpt_path={cfg.ckpt_path} both given: resume=true picks the last "
            "checkpoint of this run dir; pass one of them, not both."
        )
    if "trainer" in cfg and "dataset" in cfg and "optim" in cfg:  # a train config
        from vhp_lightning.io.schema import check_run_config

        check_run_config(cfg)  # types and ranges of the keys set by hand most often
        check_nets(cfg)
        check_checkpoint_cadence(cfg)
        check_nothing_empty(cfg)


def check_nothing_empty(cfg: DictConfig) -> None:
    """Refuse a run that would train nothing or have nothing to validate on, before it starts
    (it would otherwise exit 0 with no checkpoint, or fail at the end of fit)."""
    if cfg.trainer.get("max_steps") == 0:
        raise ValueError(
            "trainer.max_steps=0 trains nothing (and writes no checkpoint). Give a step count "
            ">= 1, or -1 to train for trainer.max_epochs epochs."
        )
    positive_int_or_none(
        "dataset.n_val",
        cfg.dataset.get("n_val"),
        "the dataset's default",
        fix="The validation split must hold at least one example (validation, the end-of-run "
        "figures and val/loss use it); to skip validation during training set "
        "trainer.check_val_every_n_epoch to a large number.",
    )


def check_checkpoint_cadence(cfg: DictConfig) -> None:
    """Lightning's ``ModelCheckpoint`` takes one cadence; the shipped one is every 1 000 steps, so
    a user's ``callbacks.model_checkpoint.every_n_epochs=5`` alone would fail inside Lightning."""
    ckpt = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if not isinstance(ckpt, DictConfig):
        return
    keys = ("every_n_train_steps", "every_n_epochs", "train_time_interval")
    given = [k for k in keys if ckpt.get(k) not in (None, 0)]
    if len(given) > 1:
        unset = " ".join(f"callbacks.model_checkpoint.{k}=null" for k in given if k != given[-1])
        raise ValueError(
            f"callbacks.model_checkpoint sets {' and '.join(given)}: Lightning saves on one "
            f"cadence. Keep one, e.g. add {unset}."
        )


def check_nets(cfg: DictConfig) -> None:
    """Refuse a model net without ``_target_``: what ``+model.encoder.hidden=[64]`` (Hydra's hint
    when ``model.encoder.hidden=[64]`` is refused) leaves in place of ``${paper.nets.encoder}``."""
    model = cfg.get("model")
    for key in ("encoder", "decoder", "prior_encoder", "prior_decoder"):
        net = model.get(key) if isinstance(model, DictConfig) else None
        if isinstance(net, DictConfig) and "_target_" not in net:
            raise ValueError(
                f"model.{key} has no _target_ (got {OmegaConf.to_container(net)}). A model takes "
                f"its nets from paper.nets: set their keys there, e.g. "
                f"paper.nets.{key}.hidden=[64,64], or pick another set with paper/nets=mlp|gated|"
                "conv64 (conf/paper/nets/)."
            )


def configure_torch(num_threads: Any = 1, flush_denormal: Any = True) -> str:
    """Apply the run's CPU settings and return the line that reports them.

    ``num_threads``: torch's intra-op threads (``null`` keeps torch's default, one per core). One
    is the default: on the App. F MLPs (batch 128) a second thread under load was measured slower
    than one, and parallel runs then share the cores. ``flush_denormal``: treat denormal floats
    as zero on CPU (``torch.set_flush_denormal``). REWO's initial beta = 1e-4 scales every gradient
    through the prior nets into the denormal range, where each float operation is many times
    slower (bench/RESULTS.md); flushing them changes no Adam update (their squares are below the
    float32 range already, so Adam's step is 0 either way).
    """
    import torch  # here, not at the top: the CLI's --help and --cfg need no torch

    threads = positive_int_or_none("num_threads", num_threads, "torch's default")
    if threads is not None:
        torch.set_num_threads(threads)
    if not isinstance(flush_denormal, bool):
        raise TypeError(f"flush_denormal must be true or false, got {flush_denormal!r}")
    flushed = torch.set_flush_denormal(flush_denormal) and flush_denormal
    return (
        f"torch: {torch.get_num_threads()} CPU thread(s) (num_threads={num_threads}), "
        f"denormals {'flushed to zero' if flushed else 'kept'} (flush_denormal={flush_denormal})"
    )


def is_secret(key: Any) -> bool:
    """Whether a config key names a secret: ``*key*``, ``*token*``, ``*secret*``, ``*password*``."""
    return isinstance(key, str) and bool(SECRET_KEY.search(key))


def redact(node: Any) -> Any:
    """A copy of a plain config with the value of every secret key replaced, also inside override
    strings (``a.api_key=abc`` in ``hydra.overrides`` or an ``override_dirname``)."""
    if isinstance(node, Mapping):  # a secret is a scalar; under a secret-named section, recurse
        return {
            k: REDACTED if is_secret(k) and isinstance(v, (str, int, float)) else redact(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact(v) for v in node]
    if isinstance(node, str) and "=" in node:
        return ",".join(redact_override(part) for part in node.split(","))
    return node


def redact_override(override: str) -> str:
    """``+a.api_key=abc`` -> ``+a.api_key=<redacted>``; other overrides are returned unchanged."""
    key, sep, _ = override.partition("=")
    return f"{key}={REDACTED}" if sep and is_secret(key.rsplit(".", 1)[-1]) else override


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, secrets redacted: what we store and log."""
    return redact(OmegaConf.to_container(cfg, resolve=True))
