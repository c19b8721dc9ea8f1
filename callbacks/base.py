"""Shared machinery of the beta-schemes (REWO, GECO, warm-up, ...): one small base class.

A scheme is a Lightning ``Callback``. After every training batch it reads the batch's constraint
value C_ba from what ``training_step`` returned, all-reduces it over DDP ranks (so every process
holds the same beta), updates the running average C_t = (1 - alpha) C_ba + alpha C_{t-1}
(C_0 = C_ba, sec. 2.1), lets the subclass update beta and the phase, writes both onto the
LightningModule for the *next* step (decision 3: beta is applied one step after the batch
that produced it), and logs them. Its state is in ``state_dict()`` so checkpoints carry it.

The scheme's quantities (``<name>/beta``, ``/c_hat``, ``/kappa_sq``, ``/train_prior``, and
``train/sigma`` when ``training_step`` returns a learned likelihood sigma) go to the loggers every
``trainer.log_every_n_steps`` steps (every step by default), one row per step with ``epoch``,
through the one per-step logging path, ``vhp_lightning.io.steplog.log_step`` (it says why not
``LightningModule.log``). They are also put in ``trainer.callback_metrics``, where the progress
line, other callbacks and ``vhp_lightning.train``'s returned metrics find them.

The module protocol (see ``ConstraintModule``) is all a scheme needs, so any LightningModule can use
these callbacks, not only ours.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from vhp_lightning.io.steplog import log_step

LOG_BETA_MIN = math.log(1e-12)  # beta never reaches 0 (it could not recover from exactly 0)
LOG_BETA_MAX = math.log(1e12)  # GECO's beta is unbounded above 1 but must stay finite


@runtime_checkable
class ConstraintModule(Protocol):
    """What a LightningModule must offer to be driven by a beta-scheme callback.

    * ``beta: float`` - the weight of the KL/F term, read in every ``training_step``;
    * ``train_prior: bool`` - whether the prior (second-layer) parameters are optimised;
    * ``training_step`` returns a dict with key ``"constraint"``: the batch average C_ba of the
      reconstruction error C (a scalar tensor or float), e.g.
      ``vhp_lightning.bounds.squared_error_per_pixel(x, x_mean).mean()``.
    """

    beta: float
    train_prior: bool


def clamp_log_beta(log_beta: float, upper: float = 0.0) -> float:
    """beta = exp(log_beta) with log_beta clamped to [LOG_BETA_MIN, upper]: finite and > 0."""
    if math.isnan(log_beta):
        raise FloatingPointError("beta update produced NaN; the constraint value was not finite")
    return math.exp(min(max(log_beta, LOG_BETA_MIN), upper))


class BetaScheme(Callback):
    """Base class: running average of the constraint, logging, checkpointed state, DDP reduce.

    Subclasses implement :meth:`update` (called once per training batch with the new C_t) and
    may set ``self.beta`` and ``self.train_prior``. ``kappa`` is the constraint bound (an RMS
    pixel error, decision 1); schemes that ignore the constraint pass ``kappa=None``.
    """

    name = "scheme"

    def __init__(
        self,
        beta_init: float,
        train_prior: bool = True,
        kappa: float | None = None,
        alpha: float = 0.99,
        plateau_steps: int = 5_000,
    ) -> None:
        super().__init__()
        _check_number("beta_init", beta_init, low=0.0)
        _check_number("alpha", alpha, low=0.0, high=1.0, high_open=True)
        if kappa is not None:
            _check_number("kappa", kappa, low=0.0, low_open=True)
        self.kappa = None if kappa is None else float(kappa)
        self.alpha = float(alpha)
        self.plateau_steps = int(plateau_steps)
        self.beta = float(beta_init)
        self.train_prior = bool(train_prior)
        self.c_hat: float | None = None
        self.step = 0
        self.switch_step: int | None = None  # first step of the main phase (REWO-like schemes)
        self.steps_per_epoch = 1  # set from the trainer at train start (warm-up needs it)
        self._best_c = math.inf
        self._best_step = 0
        self._warned = False

    # --- what subclasses define -------------------------------------------------------------
    def update(self, c_hat: float) -> None:
        """Update ``self.beta`` / ``self.train_prior`` from the running constraint ``c_hat``."""
        raise NotImplementedError

    @property
    def kappa_sq(self) -> float | None:
        return None if self.kappa is None else self.kappa**2

    # --- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        missing = [a for a in ("beta", "train_prior") if not hasattr(pl_module, a)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} needs the LightningModule to follow the ConstraintModule "
                f"protocol (callbacks/base.py); {type(pl_module).__name__} lacks attribute(s) "
                f"{', '.join(missing)}. Set `self.beta = 1.0` and `self.train_prior = True` in "
                "__init__, use `self.beta` to weight the KL term, and return "
                '{"loss": ..., "constraint": C_ba} from training_step.'
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.steps_per_epoch = max(1, int(trainer.num_training_batches or 1))
        self._push(pl_module)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        c_ba = self._read_constraint(trainer, outputs)
        if c_ba is not None:
            self.c_hat = (
                c_ba if self.c_hat is None else (1 - self.alpha) * c_ba + self.alpha * (self.c_hat)
            )
        self.update(self.c_hat if self.c_hat is not None else math.nan)
        self.step += 1
        self._check_plateau()
        self._push(pl_module)
        metrics = {
            f"{self.name}/beta": self.beta,
            f"{self.name}/train_prior": float(self.train_prior),
        }
        if self.c_hat is not None:
            metrics[f"{self.name}/c_hat"] = self.c_hat
        if self.kappa_sq is not None:
            metrics[f"{self.name}/kappa_sq"] = self.kappa_sq
        if isinstance(outputs, dict) and "sigma" in outputs:  # a learned likelihood sigma
            metrics["train/sigma"] = float(outputs["sigma"])
        trainer.callback_metrics.update(metrics)
        # The batch just trained, through the one logging path (vhp_lightning/io/steplog.py).
        log_step(trainer, {**metrics, "epoch": trainer.current_epoch}, trainer.log_every_n_steps)

    def state_dict(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "train_prior": self.train_prior,
            "c_hat": self.c_hat,
            "step": self.step,
            "switch_step": self.switch_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the scheme from a checkpoint, every value checked (``CheckpointError``)."""
        from vhp_lightning.io.checkpoint import CheckpointError
        from vhp_lightning.io.trusted_state import (
            FIX,
            UntrustedStateError,
            check_beta_state,
            check_count,
        )

        name = f"the {type(self).__name__} state"
        try:
            check_beta_state(state_dict, name)
            step = check_count(state_dict.get("step"), f"{name}['step']")
            c_hat = state_dict.get("c_hat")
            if c_hat is not None and (
                isinstance(c_hat, bool)
                or not isinstance(c_hat, (int, float))
                or not math.isfinite(c_hat)
                or c_hat < 0
            ):
                raise UntrustedStateError(f"{name}['c_hat'] must be empty or >= 0, got {c_hat!r}")
            switch = state_dict.get("switch_step")
            if switch is not None:
                check_count(switch, f"{name}['switch_step']", upper=step)
        except UntrustedStateError as err:
            raise CheckpointError(f"{err}. {FIX}") from None
        self.beta = float(state_dict["beta"])
        self.train_prior = bool(state_dict["train_prior"])
        self.c_hat = None if c_hat is None else float(c_hat)
        self.step = step
        self.switch_step = switch

    # --- helpers ------------------------------------------------------------------------------
    def _push(self, pl_module: pl.LightningModule) -> None:
        pl_module.beta = self.beta
        pl_module.train_prior = self.train_prior

    def _read_constraint(self, trainer: pl.Trainer, outputs: Any) -> float | None:
        if not isinstance(outputs, dict) or "constraint" not in outputs:
            if self.kappa is None:
                return None
            raise KeyError(
                f"{type(self).__name__} needs training_step to return a dict with key "
                "'constraint' (the batch average C_ba of the reconstruction error); got "
                f"{type(outputs).__name__}{sorted(outputs) if isinstance(outputs, dict) else ''}."
            )
        c = outputs["constraint"]
        c = c.detach().float() if torch.is_tensor(c) else torch.tensor(float(c))
        c = trainer.strategy.reduce(c.to(trainer.strategy.root_device), reduce_op="mean")
        value = float(c)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"constraint C_ba is {value} at step {self.step}; the model produced non-finite "
                "reconstructions. Lower the learning rate or check the data."
            )
        return value

    def _check_plateau(self) -> None:
        """Warn once when C_t sits above kappa^2 without improving for ``plateau_steps`` steps."""
        if self.kappa_sq is None or self.c_hat is None or self._warned or self.plateau_steps <= 0:
            return
        if self.c_hat <= self.kappa_sq:
            self._best_step = self.step
            return
        if self.c_hat < 0.99 * self._best_c:
            self._best_c, self._best_step = self.c_hat, self.step
        elif self.step - self._best_step >= self.plateau_steps:
            self._warned = True
            rank_zero_warn(
                f"{type(self).__name__}: the running reconstruction error C_t = {self.c_hat:.3g} "
                f"has stayed above kappa^2 = {self.kappa_sq:.3g} (kappa = {self.kappa}) without "
                f"improving by 1% for {self.plateau_steps} steps (now step {self.step}). kappa may "
                "be too tight for this model and data: raise optim.kappa (the RMS pixel error you "
                "accept) or check the reconstructions."
            )


def find_scheme(trainer: pl.Trainer) -> BetaScheme | None:
    """The run's beta-scheme callback (REWO, GECO, ...), or None when it has none."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, BetaScheme)), None)


def _check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise a clear error unless ``value`` is a real number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"optim.{name} must be a number, got {value!r} ({type(value).__name__}).")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ValueError(f"optim.{name} must satisfy {lo}{name}{hi}, got {value}.")
