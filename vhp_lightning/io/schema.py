"""A typed schema of the run config's plain values, checked once before anything is built.

``check_run_config(cfg)`` validates the keys a user sets by hand most often (budget, batch,
workers, seed, learning rate, kappa, the run switches) with pydantic in strict mode: a string
``"true"`` is not a boolean, ``1.5`` is not a step count, ``inf`` is not a learning rate. Every
problem is reported at once, each naming the key, what it must be and the value given. Keys
the schema does not name are left to the objects that take them (their constructors check them).
"""

from __future__ import annotations

from typing import Annotated, Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Count = Annotated[int, Field(strict=True, ge=1)]
NonNegative = Annotated[int, Field(strict=True, ge=0)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Trainer(_Section):
    max_steps: Annotated[int, Field(strict=True, ge=-1)] = -1
    max_epochs: Annotated[int, Field(strict=True, ge=-1)] | None = None
    check_val_every_n_epoch: Count | None = None
    log_every_n_steps: Count = 50
    devices: Count | str | list[int] = 1
    enable_progress_bar: Flag = True
    enable_model_summary: Flag = True
    deterministic: Flag | str = False


class _Dataset(_Section):
    batch_size: Count
    eval_batch_size: Count | None = None
    num_workers: NonNegative = 0
    seed: NonNegative | None = None


class _Optimizer(_Section):
    lr: Positive


class _Optim(_Section):
    kappa: Positive | None = None
    optimizer: _Optimizer


class RunConfig(_Section):
    """The typed part of ``conf/train.yaml`` and its groups."""

    seed: NonNegative | None = 0
    test: Flag = True
    num_threads: Count | None = 1
    flush_denormal: Flag = True
    compile: str | None = None
    nll_samples: NonNegative = 100
    test_nll_images: Count | None = None
    log_parts_every_n_steps: Count = 50
    trainer: _Trainer
    dataset: _Dataset
    optim: _Optim


class ConfigError(ValueError):
    """The run config has values of the wrong type or out of range (all listed)."""


def check_run_config(cfg: DictConfig | dict[str, Any]) -> None:
    """Raise ``ConfigError`` listing every schema violation of ``cfg`` (resolved first)."""
    if isinstance(cfg, DictConfig):  # resolve only the keys the schema reads
        names = set(RunConfig.model_fields)
        plain = {
            k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
            for k, v in ((k, cfg.get(k)) for k in names if k in cfg)
        }
    else:
        plain = cfg
    try:
        RunConfig.model_validate(plain)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(part) for part in e["loc"] if not str(part).startswith("function-"))
            key = key.split(".int")[0].split(".float")[0].split(".bool")[0]
            lines.append(f"  {key}: {e['msg'].lower()} (got {e.get('input')!r})")
        unique = list(dict.fromkeys(lines))
        raise ConfigError(
            "invalid run config, fix on the command line (e.g. trainer.max_steps=2000):\n"
            + "\n".join(unique)
        ) from None
