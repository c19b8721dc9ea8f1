"""Use a trained model from Python, no Hydra involved: ``vhp_lightning.load(path)``.

    >>> import vhp_lightning
    >>> m = vhp_lightning.load("outputs/<date>/<time>/checkpoints/last.ckpt")
    >>> mean, logvar = m.encode(x)            # x: (B, *data_shape) -> (B, latent_dim) each
    >>> x_hat = m.decode(mean)                # (B, *data_shape), E[x|z]
    >>> m.sample(16)                          # (16, *data_shape)
    >>> m.log_likelihood(x, samples=5000)     # (B,) nats, importance-sampled (sec. 4.3)
    >>> m.interpolate(x[0], x[1]).decoded     # (P, *data_shape), graph interpolation (sec. 2.3)

Images come back in the data's shape, ``(B, C, H, W)`` for image data (``data_shape``, e.g.
``(1, 28, 28)``), never flattened; ``m.datamodule()`` rebuilds the run's data (its loaders set
themselves up on first use).

The model is rebuilt from the config the checkpoint stores (``VHPModule`` writes it as
``vhp_config``), through the ``_target_`` allow-list of ``vhp_lightning.io.instantiate`` (the
classes of the package's configs and the classes you trust; no functions), and the
weights are read with ``weights_only=True``: opening a shared checkpoint runs no foreign code and
writes no file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vhp_lightning.analysis.graph import InterpolationResult, interpolate
from vhp_lightning.analysis.nll import log_likelihood_batched
from vhp_lightning.io.checkpoint import CheckpointError, load_checkpoint, weight_mismatch
from vhp_lightning.io.instantiate import (
    allowed_targets,
    check_targets,
    safe_instantiate,
    to_plain,
)
from vhp_lightning.models.base import LatentVariableModel


class TrainedModel:
    """A trained model (``vhp_lightning.models``) in eval mode, with its run config.

    Every method runs without gradients and accepts tensors (or arrays) on any device; results
    are on ``self.device``. ``data_shape`` is one example's shape, e.g. ``(1, 28, 28)``.

    Attributes:
        model: the ``nn.Module`` (``VHP``, ``VAE``, ``IWAE``, ``IWAE2``, ``VampPrior``).
        config: the resolved run config it was trained with (read-only ``DictConfig``).
        data_shape: shape of one example, from ``config.dataset.data_shape``.
        beta, train_prior: the beta-scheme state when the checkpoint was written.
        global_step: the training step of the checkpoint.
    """

    def __init__(
        self,
        model: LatentVariableModel,
        config: Mapping[str, Any],
        beta: float = 1.0,
        train_prior: bool = True,
        global_step: int = 0,
        trusted: Collection[str] = (),
    ) -> None:
        self.model = model.eval()
        self.config: DictConfig = OmegaConf.create(dict(config))
        OmegaConf.set_readonly(self.config, True)
        shape = self.config.get("dataset", {}).get("data_shape")
        self.data_shape: tuple[int, ...] | None = tuple(int(d) for d in shape) if shape else None
        self.beta, self.train_prior, self.global_step = beta, train_prior, global_step
        self.trusted = frozenset(trusted)

    def __repr__(self) -> str:
        return (
            f"TrainedModel({type(self.model).__name__}, data_shape={self.data_shape}, "
            f"step={self.global_step}, beta={self.beta:.3g}, device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TrainedModel:
        self.model.to(device)
        return self

    def _tensor(self, x: Any) -> torch.Tensor:
        param = next(self.model.parameters())
        return torch.as_tensor(x).to(device=param.device, dtype=param.dtype)

    def _unflatten(self, x_flat: torch.Tensor) -> torch.Tensor:
        return x_flat.view(-1, *self.data_shape) if self.data_shape else x_flat

    @torch.no_grad()
    def encode(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """q_phi(z|x): ``x: (B, *data_shape)`` -> ``(mean, logvar)``, each ``(B, latent_dim)``."""
        return self.model.encode(self._tensor(x))

    @torch.no_grad()
    def decode(self, z: Any) -> torch.Tensor:
        """E[x|z] (Bernoulli probabilities or Gaussian means): ``z: (B, latent_dim)`` ->
        ``(B, *data_shape)``."""
        return self._unflatten(self.model.decode(self._tensor(z)))

    @torch.no_grad()
    def sample_prior(self, n: int) -> torch.Tensor:
        """z ~ p(z) (the learned hierarchical prior for the VHP, eq. 13): ``(n, latent_dim)``."""
        return self.model.sample_prior(n)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """E[x|z] for ``n`` prior samples z: ``(n, *data_shape)``."""
        return self._unflatten(self.model.sample(n))

    @torch.no_grad()
    def log_likelihood(self, x: Any, samples: int = 5000, chunk_size: int = 1000) -> torch.Tensor:
        """Importance-sampled log p(x) in nats with S = ``samples`` (sec. 4.3; for the two-layer
        models (z, zeta) are sampled jointly): ``x: (B, *data_shape)`` -> ``(B,)``.
        ``chunk_size`` bounds the decoder evaluations (images x samples) per forward pass."""
        return log_likelihood_batched(self.model, self._tensor(x), samples, chunk_size)

    def interpolate(
        self,
        x_a: Any,
        x_b: Any,
        n_nodes: int = 1000,
        n_neighbors: int = 18,
        seed: int | None = None,
    ) -> InterpolationResult:
        """Graph-based interpolation between two examples ``x_a, x_b: (*data_shape)`` (sec. 2.3):
        a k-NN graph over ``n_nodes`` prior samples, the shortest path between the posterior
        means, decoded. ``result.decoded`` is ``(P, *data_shape)`` (numpy), ``result.path``
        ``(P, latent_dim)``."""
        result = interpolate(
            self.model,
            self._tensor(x_a),
            self._tensor(x_b),
            n_nodes=n_nodes,
            n_neighbors=n_neighbors,
            seed=seed,
        )
        if self.data_shape:
            result = dataclasses.replace(
                result, decoded=result.decoded.reshape(-1, *self.data_shape)
            )
        return result

    def datamodule(self, **overrides: Any) -> Any:
        """The run's DataModule, rebuilt from the stored config with ``overrides`` (e.g.
        ``data_dir=...``, ``eval_batch_size=...``) through the same allow-list. It never
        downloads unless ``download=True`` is passed here: a stored ``download: true`` is
        ignored, so opening a checkpoint writes no file."""
        node = cast(dict[str, Any], OmegaConf.to_container(self.config, resolve=True))["dataset"]
        if "download" in node:
            node["download"] = False
        dataset = allowed_targets("dataset") | self.trusted
        return safe_instantiate({**node, **overrides}, dataset, "dataset")


def _model_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``model.*`` entries of a ``VHPModule`` state dict, prefix removed."""
    return {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(state)`` after a comparison whose error names every mismatch
    (``weight_mismatch``)."""
    mismatch = weight_mismatch(state, model.state_dict())
    if mismatch:
        raise CheckpointError(
            f"the weights in {where} do not fit the model its config builds "
            f"({type(model).__name__}) — {mismatch}. The checkpoint comes from another "
            "model or config version; load it with the code and config it was trained with."
        )
    model.load_state_dict(state)


def load(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    trusted: Collection[str] = (),
) -> TrainedModel:
    """Load a checkpoint written by ``vhp_lightning.train`` as a ``TrainedModel`` in eval mode.

    Raises ``CheckpointError`` (missing/corrupt/unsafe file, no stored config, weights that do
    not fit) or ``UnsafeConfigError`` (a ``_target_`` outside the allow-list) before any code
    from the checkpoint runs. ``trusted``: your own classes, trained with this package, that you
    vouch for: class names (``"my_pkg.models.MyVAE"``) or ``"my_pkg.*"`` (the classes defined
    under ``my_pkg``), as in ``$VHP_TRUSTED_TARGETS``, which is read too (docs/extending.md);
    functions are refused even there.
    """
    ckpt = load_checkpoint(path, map_location=str(map_location))
    stored = ckpt.get("vhp_config")
    if not stored:
        raise CheckpointError(
            f"{path} stores no run config ('vhp_config'); it was not written by "
            "vhp_lightning.train. Build the model yourself and load its 'state_dict'."
        )
    config = to_plain(stored)
    extra = frozenset(trusted)
    check_targets(config, allowed_targets() | extra)  # the whole config, before anything is built
    if not isinstance(config.get("model"), Mapping) or "_target_" not in config["model"]:
        raise CheckpointError(f"the config stored in {path} has no model._target_")
    model = safe_instantiate(config["model"], allowed_targets("model") | extra, "model")
    load_weights(model, _model_state(ckpt["state_dict"]), str(path))
    model.to(map_location)
    beta = ckpt.get("vhp_beta") or {}
    return TrainedModel(
        model,
        config,
        beta=float(beta.get("beta", 1.0)),
        train_prior=bool(beta.get("train_prior", True)),
        global_step=int(ckpt.get("global_step", 0)),
        trusted=extra,
    )


__all__ = ["TrainedModel", "load", "load_weights"]
