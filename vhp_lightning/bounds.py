"""Log-densities and bounds of the VHP paper as pure functions of tensors.

One convention everywhere in this file (and the whole package):

* densities are **summed over the last (data or latent) dimension**, so a ``(..., D)`` input gives
  a ``(...,)`` output; image tensors are flattened by the caller;
* per-example quantities are returned un-reduced, shape ``(B,)`` (or ``(K, B)`` for K samples);
  the caller takes the **mean over the batch**;
* every log-density is in nats and every computation that combines log-weights (logsumexp,
  KL) runs in float32 or wider, even when the networks run in bf16 (see ``_f32``).

References are to Klushyn et al., *Learning Hierarchical Priors in VAEs*, NeurIPS 2019.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def _f32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Upcast half-precision tensors to float32 (bounds are never evaluated in bf16/fp16)."""
    return tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(logvar))), summed over the last dim.

    Shapes broadcast: ``x, mean, logvar: (..., D)`` -> ``(...,)``.
    """
    x, mean, logvar = _f32(x, mean, logvar)
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def std_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I), summed over the last dim: ``(..., D)`` -> ``(...,)``."""
    (x,) = _f32(x)
    return -0.5 * (LOG_2PI + x.pow(2)).sum(-1)


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)), summed over the last dim: ``(..., D)`` -> ``(...,)``.

    ``x`` may be fractional in [0, 1] (then this is minus the binary cross-entropy).
    """
    x, logits = _f32(x, logits)
    x, logits = torch.broadcast_tensors(x, logits)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def gaussian_kl_std_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in closed form, summed over the last dim.

    ``(..., D)`` -> ``(...,)``. Used by the ELBO of eq. 2 and by the App. B.4 variant of the
    VHP (ELBO instead of the IW bound in the second stochastic layer).
    """
    mean, logvar = _f32(mean, logvar)
    return 0.5 * (mean.pow(2) + torch.exp(logvar) - 1.0 - logvar).sum(-1)


def reparameterize(
    mean: torch.Tensor, logvar: torch.Tensor, n_samples: int | None = None
) -> torch.Tensor:
    """Draw z = mean + exp(logvar / 2) * eps with eps ~ N(0, I).

    ``mean, logvar: (B, D)`` -> ``(B, D)``, or ``(n_samples, B, D)`` when ``n_samples`` is given.
    """
    shape = mean.shape if n_samples is None else (n_samples, *mean.shape)
    eps = torch.randn(shape, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * logvar) * eps


def squared_error_per_pixel(x: torch.Tensor, x_mean: torch.Tensor) -> torch.Tensor:
    """The constraint C_theta(x, z) of sec. 2.1: mean over data dims of (x - E[x|z])^2.

    ``x, x_mean: (B, D)`` -> ``(B,)``. kappa is then an RMS pixel error (decision 1): the
    batch average of this is C_ba of Alg. 1.
    """
    x, x_mean = _f32(x, x_mean)
    return (x - x_mean).pow(2).mean(-1)


def iw_log_marginal(log_w: torch.Tensor) -> torch.Tensor:
    """Importance-weighted bound log (1/K) sum_k w_k of eq. 8, from log-weights.

    ``log_w: (K, ...)`` -> ``(...,)``: the log-mean-exp over the first (sample) dimension.
    For the VHP the weights are ``log p_Theta(z|zeta_k) + log p(zeta_k) - log q_Phi(zeta_k|z)``.
    """
    (log_w,) = _f32(log_w)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def vhp_kl_bound(log_q_z: torch.Tensor, log_p_z_bound: torch.Tensor) -> torch.Tensor:
    """Single-sample estimate of F(phi, Theta, Phi), eq. 8: log q_phi(z|x) - [IW bound on log p(z)].

    ``log_q_z, log_p_z_bound: (B,)`` -> ``(B,)``. Since the IW bound is a lower bound on
    log p_Theta(z), this is an upper bound on KL(q_phi(z|x) || p_Theta(z)) in expectation.
    """
    return log_q_z - log_p_z_bound


def elbo(log_px_z: torch.Tensor, kl: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """(beta-weighted) evidence lower bound of eq. 2: E_q[log p(x|z)] - beta * KL, shape ``(B,)``.

    With ``kl`` = F of eq. 8 and beta = 1/lambda this is minus the Lagrangian of eq. 9 divided by
    lambda, up to the constant kappa^2 (decision 2).
    """
    return log_px_z - beta * kl
