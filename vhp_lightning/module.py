"""``VHPModule``: the only file that knows the Trainer. Manual optimisation, one optimiser.

One training step (Alg. 1): the model returns its loss at the current beta (nll + beta * kl for
the VHP), its parts and the constraint C_ba -> ``manual_backward`` -> one optimiser step over two
parameter groups, theta/phi (encoder, decoder) and Theta/Phi (the prior nets), where the
Theta/Phi gradients are dropped while ``train_prior`` is off (REWO's initial phase) -> return
C_ba. A beta-scheme callback (``callbacks/``) reads C_ba and sets ``beta`` and ``train_prior``
for the next step; this module never imports a callback.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from vhp_lightning.analysis.eval_mode import forked_rng
from vhp_lightning.analysis.nll import (
    PER_IMAGE_FILE,
    MeanNLL,
    NLLStandardError,
    loader_indices,
    log_likelihood_batched,
    write_per_image,
)
from vhp_lightning.datamodules.batches import batch_inputs
from vhp_lightning.io.checkpoint import CHECKPOINT_FORMAT
from vhp_lightning.io.config_values import non_negative_int, positive_int, positive_int_or_none
from vhp_lightning.io.steplog import log_step
from vhp_lightning.models.base import LatentVariableModel
from vhp_lightning.runs.interrupts import interruptible, stop_if_terminated

OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
log = logging.getLogger(__name__)
NLL_SLICE = 10  # images per importance-sampled slice of test/nll: a signal is seen between slices


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; raised before the bad gradient reaches any parameter."""


class VHPModule(pl.LightningModule):
    """Trains any model of ``vhp_lightning.models`` with a beta-weighted objective.

    Args:
        model: the generative model (``loss``, ``vae_parameters``, ``prior_parameters``).
        optimizer: factory (a Hydra ``_partial_``) of the optimiser; it gets two parameter
            groups, theta/phi and Theta/Phi (``configure_optimizers``).
        beta: initial weight of the KL term (a scheme callback overrides it).
        train_prior: initial phase flag (a scheme callback overrides it).
        config: the resolved run config, stored in checkpoints for reloading (optional).
        nll_samples: S of the importance-sampled ``test/nll`` (sec. 4.3); 0 turns it off. The
            paper's S = 5000 is ``vhp_lightning.evaluate``'s default; the end-of-training test
            uses fewer so it stays cheap.
        nll_chunk_size: decoder evaluations (images x samples) per forward pass of ``test/nll``.
        nll_images: ``test/nll`` on the first this many images of the test split (per process
            under DDP: ``ceil(nll_images / world_size)`` each); ``None`` = all. The count is
            logged beside it as ``test/nll_images``; ``test/loss`` always covers the whole split.
        log_parts_every_n_steps: log the training loss parts (loss, recon, kl, rmse, ...) every
            this many steps; each ``self.log`` costs Python time on every step that calls it.
            The beta-scheme logs beta, C_t and the phase itself, every step.
        compile_backend: ``None`` (eager) or a ``torch.compile`` backend (``"inductor"``, its
            default) for the model's training loss. beta then enters as a tensor, so a new beta
            every step does not recompile; the model's parameters and checkpoints are unchanged.
    """

    def __init__(
        self,
        model: LatentVariableModel,
        optimizer: OptimizerFactory,
        beta: float = 1.0,
        train_prior: bool = True,
        config: dict[str, Any] | None = None,
        nll_samples: int = 100,
        nll_chunk_size: int = 1000,
        nll_images: int | None = None,
        log_parts_every_n_steps: int = 50,
        compile_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.optimizer_factory = optimizer
        self.beta = float(beta)
        self.train_prior = bool(train_prior)
        self.config = config
        self._has_prior = any(True for _ in model.prior_parameters())
        self.nll_samples = non_negative_int("nll_samples", nll_samples, means="0 = off")
        self.nll_chunk_size = int(nll_chunk_size)
        self.nll_images = positive_int_or_none("test_nll_images", nll_images, "all")
        self._nll_left: float = math.inf  # images of this process still to score in test/nll
        self._nll_progress: tuple[int, float | None] = (0, None)  # (scored, to score) here
        self.log_parts_every_n_steps = positive_int(
            "log_parts_every_n_steps", log_parts_every_n_steps
        )
        self.compile_backend = compile_backend
        self._train_loss: Callable[..., dict[str, torch.Tensor]] = (
            model.loss
            if compile_backend is None
            else torch.compile(model.loss, backend=compile_backend)
        )
        self.test_nll = MeanNLL()  # summed across processes: correct under DDP
        self.test_nll_se = NLLStandardError()  # its standard error over the images
        # test/nll image by image: (split index (N,), log p(x) (N,) float64) of every rank,
        # kept after the test epoch and written by rank 0 to nll_per_image_path (set here, in
        # the process that builds the module, so that ddp_spawn's workers get it too).
        self.nll_per_image: tuple[torch.Tensor, torch.Tensor] | None = None
        self.nll_per_image_path: Path | None = _run_dir_file(PER_IMAGE_FILE)
        self._test_indices: list[torch.Tensor] | None = None  # per test batch (loader_indices)
        self._scored: list[tuple[torch.Tensor, torch.Tensor]] = []  # this rank's (index, log_px)
        # The run's wall time over its sessions: the earlier ones up to their last checkpoint
        # (what a resume keeps; the steps after it are redone), and this one since fit began.
        self._wall_before = 0.0
        self._session_start: float | None = None

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = "cpu",
        trusted: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> VHPModule:
        """Lightning's classmethod, through the safe loader: the model is rebuilt from the run
        config stored in the checkpoint (allow-listed ``_target_``s, weights only, no code run;
        ``vhp_lightning.load``), with its beta-scheme state and the end-of-run test settings of
        that config. For evaluation and your own analysis (``trainer.test(module, ...)``); its
        optimiser factory refuses to build, since a training run continues with
        ``python -m vhp_lightning.train ckpt_path=<file>`` (which restores the optimiser, the
        data position and the RNG exactly). ``kwargs`` override the module's settings."""
        from vhp_lightning.api import load

        trained = load(checkpoint_path, map_location=map_location, trusted=trusted)
        config: dict[str, Any] = {str(k): v for k, v in trained.config.items()}
        settings = {
            "nll_samples": config.get("nll_samples", 100),
            "nll_images": config.get("test_nll_images"),
            "log_parts_every_n_steps": config.get("log_parts_every_n_steps", 50),
            **kwargs,
        }
        module = cls(
            model=trained.model,
            optimizer=_resume_with_train,
            beta=trained.beta,
            train_prior=trained.train_prior,
            config=config,
            **settings,
        )
        return module.eval()

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One optimiser, two parameter groups: theta/phi (``vae_parameters``) and, if the model
        has a learned prior, Theta/Phi (``prior_parameters``). In REWO's initial phase the
        Theta/Phi gradients are set to ``None`` before the step; Adam (like every torch
        optimiser) leaves a parameter without a gradient untouched, moments and step count
        included, so this is the same as a second optimiser stepped only in the main phase,
        and ``global_step`` counts training iterations of Alg. 1."""
        groups: list[dict[str, Any]] = [{"params": list(self.model.vae_parameters())}]
        if self._has_prior:
            groups.append({"params": list(self.model.prior_parameters())})
        return self.optimizer_factory(groups)

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
                f"(recon={parts['recon'].item():.4g}, kl={parts['kl'].item():.4g}, "
                f"beta={self.beta:.3g})."
                " Training stopped before the bad update. Lower optim.optimizer.lr or check the "
                "data."
            )
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if not self.train_prior:  # initial phase (Alg. 1): the prior nets Theta/Phi stay fixed
            for p in self.model.prior_parameters():
                p.grad = None
        opt.step()
        # For callbacks and train()'s result, not for the loggers (below, every n steps): a
        # dict entry, not self.log, whose per-call bookkeeping is Python time on every step.
        self.trainer.callback_metrics["train/loss"] = loss.detach()
        # Straight to the loggers (vhp_lightning/io/steplog.py): a part logged with self.log
        # would be re-written, stale, at every later step until it is logged again.
        if self._trainer is not None:  # the parts are turned into floats only on a logged step
            log_step(
                self.trainer, lambda: _scalars("train", parts, loss), self.log_parts_every_n_steps
            )
        out = {"loss": loss.detach(), "constraint": parts["constraint"].detach()}
        sigma = _learned_sigma(self.model)
        if sigma is not None:  # the other half of the effective weight: the scheme logs it
            out["sigma"] = sigma
        return out

    # --- evaluation ---------------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with interruptible(self._trainer, self.global_step):
            self._eval_step("val", batch)

    def on_test_epoch_start(self) -> None:
        limit = self.nll_images
        world = max(1, self.trainer.world_size) if self._trainer is not None else 1
        self._nll_left = math.inf if limit is None else math.ceil(limit / world)
        size = _test_size(self.trainer) if self._trainer is not None else None
        share = None if size is None else math.ceil(size / world)  # this process's images
        self._nll_progress = (0, min(self._nll_left, share) if share is not None else limit)
        self.nll_per_image, self._scored = None, []
        loaders = self.trainer.test_dataloaders if self._trainer is not None else None
        self._test_indices = loader_indices(loaders)
        if self.nll_samples and self._test_indices is None and self.global_rank == 0:
            log.warning(
                "test/nll: the test loader's order is not known in advance (a shuffled or custom "
                "sampler, or several loaders), so no per-image values (%s) are kept; under DDP "
                "the sampler's padding copies are then scored twice",
                PER_IMAGE_FILE,
            )

    def test_step(self, batch: Any, batch_idx: int) -> None:
        with interruptible(self._trainer, self.global_step):
            self._eval_step("test", batch)
            if self.nll_samples and self._nll_left > 0:
                x = _inputs(batch)
                x = x[: int(min(len(x), self._nll_left))]
                self._nll_left -= len(x)
                index = None
                if self._test_indices is not None:
                    index = self._test_indices[batch_idx]
                    if len(index) != len(_inputs(batch)):
                        raise RuntimeError(
                            f"test batch {batch_idx} has {len(_inputs(batch))} images but its "
                            f"sampler gave {len(index)} indices: the test loader is not the one "
                            "its batch sampler describes; use an unshuffled DataLoader"
                        )
                    index = index[: len(x)]
                    own = index >= 0  # -1: a DDP padding copy of an image another rank scores
                    x, index = x[own.to(x.device)], index[own]
                    if not len(x):
                        return
                log_px = self._log_px(x, first=batch_idx == 0)
                done, total = self._nll_progress
                self._nll_progress = (done + len(x), total)
                if index is not None:
                    self._scored.append((index, log_px.detach().to(torch.float64).cpu()))
                self.test_nll.update(log_px)
                self.test_nll_se.update(log_px)
                self.log("test/nll", self.test_nll, on_step=False, on_epoch=True)
                self.log("test/nll_se", self.test_nll_se, on_step=False, on_epoch=True)
                self.log(
                    "test/nll_images",
                    float(len(x)),
                    on_step=False,
                    on_epoch=True,
                    reduce_fx="sum",
                    sync_dist=True,
                )

    def on_test_epoch_end(self) -> None:
        """Gather every rank's per-image ``test/nll`` values into ``nll_per_image`` (split
        index ``(N,)``, log p(x) ``(N,)`` float64, sorted by index; N = ``test/nll_images``,
        ``test/nll = -mean(log p(x))``); rank 0 writes them to ``nll_per_image_path``. After a
        ``fit`` also logs ``run/wall_s`` (``wall_seconds``: training and test, over resumes)."""
        if (wall := self.wall_seconds) is not None:
            self.log("run/wall_s", wall, on_epoch=True, rank_zero_only=True)
        if not self.nll_samples or self._test_indices is None:
            return
        index, log_px = self._gather_scored()
        order = torch.argsort(index)
        self.nll_per_image = (index[order], log_px[order])
        if self.global_rank == 0 and self.nll_per_image_path is not None and len(index):
            write_per_image(self.nll_per_image_path, *self.nll_per_image)
            log.info("test/nll per image (index, log p(x)): %s", self.nll_per_image_path)

    @property
    def nll_progress(self) -> tuple[int, int | None] | None:
        """``(images scored, images to score)`` of this process's ``test/nll`` so far (the total
        None when the test split has no length); None without one (``nll_samples = 0``). What
        the progress callback's ``test/nll`` lines show."""
        if not self.nll_samples:
            return None
        done, total = self._nll_progress
        return done, None if total is None or total == math.inf else int(total)

    def _gather_scored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's scored ``(index (n_r,), log_px (n_r,))``, concatenated over all ranks
        (an all-gather of shards padded to the longest with index -1)."""
        index = torch.cat([i for i, _ in self._scored]) if self._scored else torch.zeros(0).long()
        values = torch.cat([v for _, v in self._scored]) if self._scored else torch.zeros(0)
        values = values.to(torch.float64)
        if self._trainer is None or self.trainer.world_size <= 1:
            return index, values
        longest = int(self.all_gather(torch.tensor(len(index), device=self.device)).max())
        pad = longest - len(index)
        index = torch.cat([index, index.new_full((pad,), -1)]).to(self.device)
        values = torch.cat([values, values.new_zeros(pad)]).to(self.device)
        index = self.all_gather(index).reshape(-1).cpu()  # (W * longest,)
        values = self.all_gather(values).reshape(-1).cpu()
        return index[index >= 0], values[index >= 0]

    def _log_px(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        """Importance-sampled log p(x), S = ``nll_samples`` (sec. 4.3), ``x: (B, ...)`` ->
        ``(B,)``, in slices of ``NLL_SLICE`` images so that a SIGTERM stops it within one slice.
        On the first batch the first image is timed and the projected time of the whole
        ``test/nll`` is logged."""
        s, chunk = self.nll_samples, self.nll_chunk_size
        out = []
        for i, xs in enumerate(x.split(NLL_SLICE)):
            stop_if_terminated(self._trainer, "test", self.global_step)
            if first and i == 0:
                start = time.perf_counter()
                out.append(log_likelihood_batched(self.model, xs[:1], s, chunk))
                self._log_projection(time.perf_counter() - start)
                xs = xs[1:]
            if len(xs):
                out.append(log_likelihood_batched(self.model, xs, s, chunk))
        return torch.cat(out)

    def _log_projection(self, seconds_per_image: float) -> None:
        """Say, before the bulk of it runs, what ``test/nll`` covers and how long it will take."""
        if self.global_rank != 0:
            return
        size = _test_size(self.trainer) if self._trainer is not None else None
        n = self.nll_images if size is None else min(self.nll_images or size, size)
        of = "" if size is None else f" of {size}"
        log.info(
            "End-of-run test/nll on %s%s test images with S = %d importance samples: about %s "
            "(measured on the first image; test_nll_images=... changes the count). The paper's "
            "protocol (every image, S = 5000) is one command: python -m vhp_lightning.evaluate "
            "ckpt_path=<run dir>/checkpoints/last.ckpt metrics=[nll]",
            "all" if n is None else n,
            of,
            self.nll_samples,
            "?" if n is None else _duration(seconds_per_image * n),
        )

    def _eval_step(self, stage: str, batch: Any) -> None:
        x = _inputs(batch)
        parts = self.model.loss(x, beta=1.0)
        loss = parts.pop("loss")
        self._log_parts(stage, parts, loss, prog_bar=stage == "val")
        if stage == "val":  # the model's own objective at the current beta, beside the beta = 1
            at_beta = loss  # bound; its second pass draws in a forked RNG: training is unchanged
            if self.beta != 1.0:
                with forked_rng(x.device):
                    at_beta = self.model.loss(x, beta=self.beta)["loss"]
            self.log("val/loss_beta", at_beta.detach(), on_epoch=True, sync_dist=True)

    def _log_parts(
        self, stage: str, parts: dict[str, torch.Tensor], loss: torch.Tensor, prog_bar: bool
    ) -> None:
        """Epoch means of an evaluation stage's loss and parts."""
        # val/loss and test/loss are the beta = 1 bound -ELBO (epoch means over all ranks).
        self.log(f"{stage}/loss", loss.detach(), prog_bar=prog_bar, on_epoch=True, sync_dist=True)
        self.log_dict(_parts(stage, parts), on_epoch=True, sync_dist=True)

    # --- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vhp_format"] = CHECKPOINT_FORMAT
        checkpoint["vhp_config"] = self.config
        checkpoint["vhp_beta"] = {"beta": self.beta, "train_prior": self.train_prior}
        if (wall := self.wall_seconds) is not None:
            checkpoint["vhp_wall_s"] = wall

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("vhp_beta")
        if state:
            self.beta, self.train_prior = float(state["beta"]), bool(state["train_prior"])
        self._wall_before = float(checkpoint.get("vhp_wall_s", 0.0))

    # --- the run's wall time ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._session_start = time.monotonic()

    @property
    def wall_seconds(self) -> float | None:
        """Seconds this run has trained (and tested) so far, summed over its sessions: a resumed
        run counts its earlier sessions up to the checkpoint it resumed from (``vhp_wall_s``),
        then this session since ``fit`` began. None outside ``fit`` (``evaluate``, a module
        built for analysis). Logged as ``run/wall_s`` after the end-of-run test."""
        if self._session_start is None:
            return None
        return self._wall_before + time.monotonic() - self._session_start


def _parts(stage: str, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scalar parts of a model's loss under their logged names, ``<stage>/<name>``.

    The constraint C_ba is logged as its square root, ``rmse``; ``recon`` is the reconstruction
    term E_q[-log p(x|z)] (``<stage>/nll`` names the importance-sampled -log p(x) of Table 2,
    ``test_step``).
    """
    scalars = {f"{stage}/{k}": v.detach() for k, v in parts.items() if v.dim() == 0}
    scalars[f"{stage}/rmse"] = scalars.pop(f"{stage}/constraint").clamp(min=0).sqrt()
    return scalars


def _scalars(stage: str, parts: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
    """``_parts`` plus ``<stage>/loss`` (nll + beta * kl for training) as Python floats."""
    scalars = {f"{stage}/loss": loss.detach(), **_parts(stage, parts)}
    return {k: float(v) for k, v in scalars.items()}


def _resume_with_train(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The optimiser factory of a module made by ``load_from_checkpoint``: training goes on with
    ``vhp_lightning.train``, which restores the optimiser's state too."""
    raise RuntimeError(
        "a VHPModule made by load_from_checkpoint is for evaluation; to continue training run "
        "python -m vhp_lightning.train ckpt_path=<the checkpoint> (exact: optimiser, data order "
        "and RNG are restored)."
    )


def _learned_sigma(model: LatentVariableModel) -> torch.Tensor | None:
    """The likelihood's learned sigma (decision 15), ``None`` when it has none or it is fixed.

    With beta it sets how the reconstruction is weighted against the KL term (1 / (2 sigma^2) per
    squared error), so the beta-scheme logs it every step beside beta."""
    likelihood = getattr(model, "likelihood", None)
    if likelihood is None or not getattr(likelihood, "learned", False):
        return None
    return likelihood.sigma().detach()


def _run_dir_file(name: str) -> Path | None:
    """``<Hydra run dir>/name`` when called inside a Hydra job (``vhp_lightning.train``), else
    None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir) / name


def _test_size(trainer: pl.Trainer) -> int | None:
    """Number of images of the test split(s) the trainer runs, if its loaders have a length."""
    loaders = trainer.test_dataloaders
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        return sum(len(loader.dataset) for loader in loaders)
    except (AttributeError, TypeError):
        return None


def _duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _inputs(batch: Any) -> torch.Tensor:
    """The data tensor of a batch (``batch_inputs``), which must be a float tensor."""
    x = batch_inputs(batch)
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(
            f"expected a float tensor batch (or (x, label) tuples), got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if torch.is_tensor(x) else "")
        )
    return x


__all__ = ["NonFiniteLossError", "VHPModule"]
