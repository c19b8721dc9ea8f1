"""``VHPModule``: the only file that knows the Trainer. Manual optimisation with two optimisers.

One training step (Alg. 1; ``STYLE.md``): the model returns its loss at the current beta
(nll + beta * kl for the VHP), its parts and the constraint C_ba -> ``manual_backward`` -> step
the theta/phi optimiser, and the Theta/Phi optimiser only while ``train_prior`` is on -> return
C_ba. A beta-scheme callback (``callbacks/``) reads C_ba and sets ``beta`` and ``train_prior``
for the next step; this module never imports a callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from vhp_lightning.metrics import MeanNLL, log_likelihood_batched

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; raised before the bad gradient reaches any parameter."""


class VHPModule(pl.LightningModule):
    """Trains any model of ``vhp_lightning.models`` with a beta-weighted objective.

    Args:
        model: the generative model (``loss``, ``vae_parameters``, ``prior_parameters``).
        optimizer: factory (a Hydra ``_partial_``) for the theta/phi optimiser.
        prior_optimizer: factory for the Theta/Phi optimiser; defaults to ``optimizer``.
        beta: initial weight of the KL term (a scheme callback overrides it).
        train_prior: initial phase flag (a scheme callback overrides it).
        config: the resolved run config, stored in checkpoints for reloading (optional).
        nll_samples: S of the importance-sampled ``test/nll`` (sec. 4.3); 0 turns it off. The
            paper's S = 5000 is ``vhp_lightning.evaluate``'s default; the end-of-training test
            uses fewer so it stays cheap.
        nll_chunk_size: decoder evaluations (images x samples) per forward pass of ``test/nll``.
        log_parts_every_n_steps: log the training loss parts (loss, recon, kl, rmse, ...) every
            this many steps; each ``self.log`` costs Python time on every step that calls it.
            The beta-scheme logs beta, C_t and the phase itself, every step.
        compile_backend: ``None`` (eager) or a ``torch.compile`` backend (``"inductor"``, its
            default) for the model's training loss. beta then enters as a tensor, so a new beta
            every step does not recompile; the model's parameters and checkpoints are unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        prior_optimizer: OptimizerFactory | None = None,
        beta: float = 1.0,
        train_prior: bool = True,
        config: dict[str, Any] | None = None,
        nll_samples: int = 100,
        nll_chunk_size: int = 1000,
        log_parts_every_n_steps: int = 50,
        compile_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.optimizer_factory = optimizer
        self.prior_optimizer_factory = prior_optimizer or optimizer
        self.beta = float(beta)
        self.train_prior = bool(train_prior)
        self.config = config
        self._has_prior = any(True for _ in model.prior_parameters())
        if isinstance(nll_samples, bool) or not isinstance(nll_samples, int) or nll_samples < 0:
            raise ValueError(f"nll_samples must be an integer >= 0 (0 = off), got {nll_samples!r}")
        self.nll_samples, self.nll_chunk_size = nll_samples, int(nll_chunk_size)
        every = log_parts_every_n_steps
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"log_parts_every_n_steps must be an integer >= 1, got {every!r}")
        self.log_parts_every_n_steps = every
        self.compile_backend = compile_backend
        self._train_loss = (
            model.loss
            if compile_backend is None
            else torch.compile(model.loss, backend=compile_backend)
        )
        self.test_nll = MeanNLL()  # summed across processes: correct under DDP

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opts = [self.optimizer_factory(list(self.model.vae_parameters()))]
        if self._has_prior:
            opts.append(self.prior_optimizer_factory(list(self.model.prior_parameters())))
        return opts

    def _optimizers(self) -> list[Any]:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = _inputs(batch)
        if self.compile_backend is None:
            parts = self._train_loss(x, beta=self.beta)
        else:  # a tensor: a Python float would be a constant of the compiled graph
            parts = self._train_loss(x, beta=torch.tensor(self.beta, device=x.device))
        loss = parts.pop("loss")
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at global step {self.global_step} "
                f"(nll={parts['nll'].item():.4g}, kl={parts['kl'].item():.4g}, "
                f"beta={self.beta:.3g})."
                " Training stopped before the bad update; the last checkpoint on disk is the last "
                "good state. Lower optim.optimizer.lr or check the data."
            )
        opts = self._optimizers()
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opts[0].step()
        if self.train_prior and len(opts) > 1:
            # Through the strategy (precision plugins still apply) rather than the
            # LightningOptimizer wrapper, so that `global_step` and `max_steps` count training
            # iterations of Alg. 1, not optimizer calls (Lightning counts each wrapped step).
            self.trainer.strategy.optimizer_step(opts[1].optimizer, closure=_no_closure)
        self.log("train/loss", loss.detach(), prog_bar=True, logger=False)  # progress bar only
        step = self.global_step - 1  # the batch just trained: the step the loggers record
        if step % self.log_parts_every_n_steps == 0 and self.loggers:
            # Straight to the loggers: a part logged with self.log would be re-written, stale,
            # at every later step until it is logged again.
            scalars = _scalars("train", parts, loss)
            for logger in self.loggers:
                logger.log_metrics(scalars, step=step)
        return {"loss": loss.detach(), "constraint": parts["constraint"].detach()}

    # --- evaluation ---------------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)
        if self.nll_samples:  # importance-sampled -log p(x), S = nll_samples (sec. 4.3)
            x = _inputs(batch)
            log_px = log_likelihood_batched(self.model, x, self.nll_samples, self.nll_chunk_size)
            self.test_nll.update(log_px)
            self.log("test/nll", self.test_nll, on_step=False, on_epoch=True)

    def _eval_step(self, stage: str, batch: Any) -> None:
        parts = self.model.loss(_inputs(batch), beta=1.0)
        self._log_parts(stage, parts, parts.pop("loss"), prog_bar=stage == "val")

    def _log_parts(
        self, stage: str, parts: dict[str, torch.Tensor], loss: torch.Tensor, prog_bar: bool
    ) -> None:
        """Epoch means of an evaluation stage's loss and parts."""
        # val/loss and test/loss are the beta = 1 bound -ELBO (epoch means over all ranks).
        self.log(f"{stage}/loss", loss.detach(), prog_bar=prog_bar, on_epoch=True, sync_dist=True)
        self.log_dict(_parts(stage, parts), on_epoch=True, sync_dist=True)

    # --- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vhp_config"] = self.config
        checkpoint["vhp_beta"] = {"beta": self.beta, "train_prior": self.train_prior}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("vhp_beta")
        if state:
            self.beta, self.train_prior = float(state["beta"]), bool(state["train_prior"])


def _parts(stage: str, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scalar parts of a model's loss under their logged names, ``<stage>/<name>``.

    The constraint C_ba is logged as its square root, ``rmse``; the model's ``nll`` part (the
    reconstruction term E_q[-log p(x|z)]) as ``recon``, since ``<stage>/nll`` names the
    importance-sampled -log p(x) of Table 2 (``test_step``).
    """
    scalars = {f"{stage}/{k}": v.detach() for k, v in parts.items() if v.dim() == 0}
    scalars[f"{stage}/rmse"] = scalars.pop(f"{stage}/constraint").clamp(min=0).sqrt()
    scalars[f"{stage}/recon"] = scalars.pop(f"{stage}/nll")
    return scalars


def _scalars(stage: str, parts: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
    """``_parts`` plus ``<stage>/loss`` (nll + beta * kl for training) as Python floats."""
    scalars = {f"{stage}/loss": loss.detach(), **_parts(stage, parts)}
    return {k: float(v) for k, v in scalars.items()}


def _no_closure() -> None:
    """Manual optimisation: the backward pass already ran before the step."""


def _inputs(batch: Any) -> torch.Tensor:
    """The data tensor of a batch: ``x`` or the first element of ``(x, label, ...)``."""
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(
            f"expected a float tensor batch (or (x, label) tuples), got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if torch.is_tensor(x) else "")
        )
    return x


__all__ = ["NonFiniteLossError", "VHPModule"]
