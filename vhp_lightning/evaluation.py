"""Evaluating a checkpoint, the metrics behind ``python -m vhp_lightning.evaluate ckpt_path=...
metrics=[nll]`` (also ``vhp-eval``; options in ``conf/eval.yaml``; the entry point is the light
``vhp_lightning/evaluate.py``, which imports this module only when a job runs).

Examples::

    python -m vhp_lightning.evaluate ckpt_path=outputs/.../checkpoints/last.ckpt   # NLL, S=5000
    python -m vhp_lightning.evaluate ckpt_path=... metrics=[nll,active_units,rate_distortion]
    python -m vhp_lightning.evaluate ckpt_path=... limit=1000 n_samples=500 data_dir=../data

The model and its DataModule are rebuilt from the config stored in the checkpoint, through the
``_target_`` allow-list (``vhp_lightning.io.instantiate``) and with weights-only loading
(``vhp_lightning.api.load``), so a shared checkpoint never runs foreign code. Each metric is one
function of ``METRICS``; the results go to ``metrics.json`` in the Hydra run dir (written
atomically), figures beside it, and the ``nll`` of each image to ``nll_per_image.csv`` (``index``
in the split, ``log_px``; ``vhp_lightning.analysis.nll.write_per_image``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MeanMetric

from vhp_lightning.analysis.nll import (
    PER_IMAGE_FILE,
    MeanNLL,
    NLLStandardError,
    loader_indices,
    log_likelihood_batched,
    write_per_image,
)
from vhp_lightning.api import TrainedModel, load
from vhp_lightning.bounds import gaussian_kl_std_normal, reparameterize
from vhp_lightning.datamodules.batches import first_examples
from vhp_lightning.io.config import configure_torch
from vhp_lightning.io.config_values import positive_int, positive_int_or_none
from vhp_lightning.io.files import write_json

log = logging.getLogger("vhp_lightning.evaluate")  # the command's name in its log lines
SPLITS = ("test", "val", "train")


@dataclass
class EvalContext:
    """What every metric gets: the model, the evaluated images and the options.

    Attributes:
        trained: the loaded model (``trained.model`` is the ``nn.Module``).
        x: ``(N, *data_shape)`` the images of the split, on the model's device.
        labels: ``(N,)`` their labels (digit, class or pendulum angle).
        cfg: the eval config (``conf/eval.yaml``).
        out_dir: where figures go.
        indices: ``(N,)`` each image's index in the split, or None where the split's loader
            shuffles (then no per-image file is written).
    """

    trained: TrainedModel
    x: torch.Tensor
    labels: torch.Tensor
    cfg: DictConfig
    out_dir: Path
    indices: torch.Tensor | None = None

    def batches(self) -> list[torch.Tensor]:
        return list(self.x.split(int(self.cfg.batch_size)))


# --- metrics ----------------------------------------------------------------------------------
def nll(ctx: EvalContext) -> dict[str, Any]:
    """Importance-sampled negative log-likelihood -log p(x), mean over the images (sec. 4.3,
    Table 2), S = ``n_samples``; the two-layer models sample (z, zeta) jointly. Each image's
    log p(x) goes to ``<out_dir>/nll_per_image.csv`` (``per_image``: its path), the file that
    ``report table2`` pairs between runs."""
    metric, s, chunk = MeanNLL().to(ctx.x.device), int(ctx.cfg.n_samples), int(ctx.cfg.chunk_size)
    se = NLLStandardError().to(ctx.x.device)
    start, done, values = time.perf_counter(), 0, []
    for xb in ctx.batches():
        log_px = log_likelihood_batched(ctx.trained.model, xb, s, chunk)
        metric.update(log_px)
        se.update(log_px)
        values.append(log_px.detach().to(torch.float64).cpu())
        done += len(xb)
        elapsed = time.perf_counter() - start
        log.info("nll: %d/%d images, %.1f images/s", done, len(ctx.x), done / max(elapsed, 1e-9))
    out: dict[str, Any] = {
        "nll": float(metric.compute()),
        "nll_se": float(se.compute()),
        "n_samples": s,
        "n_images": int(metric.count),
    }
    if ctx.indices is None:
        log.warning("nll: the %s loader shuffles: no per-image file written", ctx.cfg.split)
    else:
        path = ctx.out_dir / PER_IMAGE_FILE
        write_per_image(path, ctx.indices, torch.cat(values))
        out["per_image"] = str(path)
    return out


@torch.no_grad()
def active_units(ctx: EvalContext) -> dict[str, Any]:
    """Active units (App. D.2; Burda et al. 2016): unit j of z is active if
    Cov_x(E_{q(z|x)}[z_j]) > ``active_units.threshold`` (0.01).

    For the two-layer models (VHP, IWAE L=2) also the expected per-dimension
    KL(q(zeta_j|z) || N(0, 1)) with z ~ q(z|x), averaged over the images (Fig. 20), and its
    sorted bar plot ``active_units_zeta_kl.png`` on a log scale.
    """
    model, threshold = ctx.trained.model, float(ctx.cfg.active_units.threshold)
    means, kls = [], []
    prior_encoder = getattr(model, "prior_encoder", None)
    for xb in ctx.batches():
        mean, logvar = model.encode(xb)
        means.append(mean.double())
        if prior_encoder is not None:
            mu_zeta, lv_zeta = prior_encoder(reparameterize(mean, logvar))  # (B, Dzeta)
            kls.append(gaussian_kl_std_normal(mu_zeta[..., None], lv_zeta[..., None]).double())
    variance = torch.cat(means).var(dim=0, unbiased=False)  # (Dz,)
    out: dict[str, Any] = {
        "active_units": int((variance > threshold).sum()),
        "latent_dim": variance.numel(),
        "threshold": threshold,
        "variance_per_dim": variance.tolist(),
    }
    if kls:
        kl = torch.cat(kls).mean(dim=0)  # (Dzeta,)
        out["zeta_kl_per_dim"] = kl.tolist()
        out["zeta_active_units"] = int((kl > threshold).sum())
        from vhp_lightning.analysis.figures import plot_kl_per_dim, save_figure

        fig = plot_kl_per_dim(kl.cpu().numpy())
        path = save_figure(fig, ctx.out_dir / "active_units_zeta_kl.png", dpi=120)
        out["zeta_kl_figure"] = str(path)
    return out


@torch.no_grad()
def rate_distortion(ctx: EvalContext) -> dict[str, Any]:
    """Mean rate (the KL term: F of eq. 8 for the VHP, log q - log p for the others) and
    distortion (E_q[-log p(x|z)]) of the beta = 1 objective over the split (App. D.1, Fig. 19)."""
    rate, distortion = MeanMetric().to(ctx.x.device), MeanMetric().to(ctx.x.device)
    for xb in ctx.batches():
        parts = ctx.trained.model.loss(xb, beta=1.0)
        rate.update(parts["kl"].detach(), weight=len(xb))
        distortion.update(parts["recon"].detach(), weight=len(xb))
    r, d = float(rate.compute()), float(distortion.compute())
    return {"rate": r, "distortion": d, "negative_elbo": r + d}


def interpolation(ctx: EvalContext) -> dict[str, Any]:
    """Graph-interpolation analysis (sec. 2.3 / 4.2) with the ``interpolation.*`` options:
    ``analysis.interpolation.interpolation_analysis``; figures under ``interpolation/``."""
    try:
        from vhp_lightning.analysis.interpolation import interpolation_analysis
    except ModuleNotFoundError as err:
        if err.name != "vhp_lightning.analysis.interpolation":
            raise
        raise RuntimeError(
            "metric 'interpolation' needs vhp_lightning/analysis/interpolation.py, which this "
            "installation lacks; drop it from metrics=[...]"
        ) from err
    opts = ctx.cfg.interpolation
    return dict(
        interpolation_analysis(
            ctx.trained.model,
            ctx.x,
            ctx.labels,
            ctx.out_dir / "interpolation",
            n_nodes=int(opts.n_nodes),
            n_neighbors=int(opts.n_neighbors),
            n_graphs=int(opts.n_graphs),
            n_pairs=int(opts.n_pairs),
            n_strips=int(opts.n_strips),
            seed=int(ctx.cfg.seed),
        )
    )


def pendulum_paths(ctx: EvalContext) -> dict[str, Any]:
    """Fraction of graph interpolations with an angle jump (sec. 4.1, Figs. 3-4) on pendulum
    data, ``analysis.pendulum_paths``; figures and ``paths.csv`` under ``pendulum_paths/``.
    Options (``+pendulum_paths.<name>=``): n_prior 1000, k 18, n_pairs 100, threshold_deg 30."""
    from vhp_lightning.analysis.pendulum_paths import pendulum_paths_analysis

    defaults = {"n_prior": 1000, "k": 18, "n_pairs": 100, "threshold_deg": 30.0}
    opts = {key: OmegaConf.select(ctx.cfg, f"pendulum_paths.{key}", default=value)
            for key, value in defaults.items()}  # fmt: skip
    return pendulum_paths_analysis(
        ctx.trained.model, ctx.x, ctx.labels, ctx.out_dir / "pendulum_paths",
        seed=int(ctx.cfg.seed), **opts,
    )  # fmt: skip


METRICS: dict[str, Callable[[EvalContext], dict[str, Any]]] = {
    "nll": nll,
    "active_units": active_units,
    "rate_distortion": rate_distortion,
    "interpolation": interpolation,
    "pendulum_paths": pendulum_paths,
}


# --- plumbing ---------------------------------------------------------------------------------
def metric_names(cfg: DictConfig) -> list[str]:
    """``metrics=[nll,active_units]`` or ``metrics=nll`` -> a list of names."""
    return [str(m) for m in cfg.metrics] if OmegaConf.is_list(cfg.metrics) else [str(cfg.metrics)]


def check_options(cfg: DictConfig) -> None:
    """Checks that need no model or data: fail before anything is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ValueError(
            "ckpt_path is required: python -m vhp_lightning.evaluate "
            "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt"
        )
    names = metric_names(cfg)
    if not names:
        raise ValueError(f"metrics is empty; choose some of: {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"Unknown metric {name!r}. Choose one of: {', '.join(METRICS)}.")
    if cfg.split not in SPLITS:
        raise ValueError(f"Unknown split {cfg.split!r}. Choose one of: {', '.join(SPLITS)}.")
    for key in ("n_samples", "chunk_size", "batch_size"):
        positive_int(key, cfg[key])
    positive_int_or_none("limit", cfg.limit, "all images")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but no CUDA device is available; use device=cpu")
    return device


def load_split(
    trained: TrainedModel, cfg: DictConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The first ``limit`` images of ``split`` in its loader's order, their labels and their
    indices in the split: ``(N, *data_shape)``, ``(N,)``, ``(N,)`` (None: the loader shuffles)."""
    overrides: dict[str, Any] = {"eval_batch_size": int(cfg.batch_size)}
    if cfg.data_dir is not None and "data_dir" in trained.config.dataset:
        overrides["data_dir"] = str(cfg.data_dir)
    datamodule = trained.datamodule(**overrides)
    try:
        datamodule.setup("test" if cfg.split == "test" else "fit")
    except FileNotFoundError as err:
        stored = trained.config.dataset.get("data_dir", trained.config.get("data_dir"))
        raise FileNotFoundError(
            f"the {cfg.split} data of this checkpoint was not found ({err}). The checkpoint "
            f"stores data_dir={stored}; point the evaluation at the folder that holds the data: "
            f"python -m vhp_lightning.evaluate ckpt_path={cfg.ckpt_path} data_dir=<folder> "
            "(or set VHP_DATA_DIR)."
        ) from err
    loader = getattr(datamodule, f"{cfg.split}_dataloader")()
    batches = loader_indices(loader)
    x, labels = first_examples(loader, cfg.limit, cfg.split)
    if labels is None:  # unlabelled data
        labels = torch.full((len(x),), float("nan"))
    indices = None if batches is None else torch.cat(batches)[: len(x)]
    return x, labels, indices


def evaluate(cfg: DictConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Load ``cfg.ckpt_path``, compute ``cfg.metrics`` on ``cfg.split``, write
    ``out_dir/metrics.json``; returns what it wrote."""
    check_options(cfg)
    log.info(configure_torch(cfg.get("num_threads", 1), cfg.get("flush_denormal", True)))
    out_dir = Path(out_dir)
    device = _device(str(cfg.device))
    trained = load(cfg.ckpt_path, map_location=device)
    torch.manual_seed(int(cfg.seed))
    x, labels, indices = load_split(trained, cfg)
    x = x.to(device=device, dtype=next(trained.model.parameters()).dtype)
    ctx = EvalContext(trained, x, labels, cfg, out_dir, indices)
    stored = trained.config
    result: dict[str, Any] = {
        "checkpoint": str(cfg.ckpt_path),
        "split": cfg.split,
        "n_images": len(x),
        "global_step": trained.global_step,
        "model": stored.model.get("_target_"),
        "dataset": stored.dataset.get("_target_"),
        "scheme": OmegaConf.select(stored, "optim.scheme._target_"),
        "device": str(device),
        "metrics": {},
        "seconds": {},
    }
    for name in metric_names(cfg):
        log.info("%s on %d %s images ...", name, len(x), cfg.split)
        start = time.perf_counter()
        torch.manual_seed(int(cfg.seed))
        result["metrics"][name] = METRICS[name](ctx)
        result["seconds"][name] = round(time.perf_counter() - start, 3)
        write_json(out_dir / "metrics.json", result)  # after each metric: partial results survive
    summary = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for m in result["metrics"].values()
        for k, v in m.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    )
    log.info("%s\nwritten to %s", summary, out_dir / "metrics.json")
    log_results(cfg, result)
    return result


def log_results(cfg: DictConfig, result: dict[str, Any]) -> None:
    """Send the numeric results to the loggers of ``cfg.logger`` (none by default), as
    ``eval/<metric>/<name>`` at the checkpoint's training step, with the checkpoint and split as
    hyperparameters; each logger is closed (a W&B run per evaluation)."""
    from vhp_lightning.io.config import instantiate_group

    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:
        return
    row = {
        f"eval/{metric}/{key}": float(value)
        for metric, values in result["metrics"].items()
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    info = {k: result[k] for k in ("checkpoint", "split", "n_images", "global_step", "model")}
    for logger in loggers:
        logger.log_hyperparams(info)
        logger.log_metrics(row, step=int(result["global_step"]))
        logger.finalize("success")
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
