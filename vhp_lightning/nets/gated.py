"""Gated layers of App. F (Table 3: "GatedFC/GatedConv"), as in Tomczak & Welling's VampPrior code.

A gated layer is a pair of layers of the same shape multiplied element-wise, the gate through a
sigmoid: ``h(x) * sigmoid(g(x))``; ``h`` itself has a linear activation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vhp_lightning.nets.mlp import GaussianMLP


class GatedDense(nn.Module):
    """Gated FC: ``Linear(x) * sigmoid(Linear_gate(x))``, ``(..., in)`` -> ``(..., out)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.h = nn.Linear(int(in_features), int(out_features))
        self.g = nn.Linear(int(in_features), int(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConv2d(nn.Module):
    """``Conv2d(x) * sigmoid(Conv2d_gate(x))``: ``(B, in_ch, H, W)`` -> ``(B, out_ch, H', W')``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        args = (int(in_channels), int(out_channels), int(kernel_size), int(stride), int(padding))
        self.h = nn.Conv2d(*args)
        self.g = nn.Conv2d(*args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedGaussianMLP(nn.Module):
    """A diagonal Gaussian over ``out_dim`` from a stack of ``GatedDense`` layers.

    The prior nets q_Phi(zeta|z) and p_Theta(z|zeta) of the MNIST family (Table 3: "GatedFC 256,
    256, linear activation"). ``forward(x: (B, in_dim))`` returns ``(mean, logvar)``, each
    ``(B, out_dim)``; the heads are a ``GaussianMLP`` without hidden layers (one linear layer to
    mean and raw log-variance), so the log-variance is bounded exactly as in ``GaussianMLP``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256),
        logvar_min: float = -12.0,
        logvar_max: float = 6.0,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        dims = [self.in_dim, *[int(h) for h in hidden]]
        self.body = nn.Sequential(
            *[GatedDense(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.head = GaussianMLP(dims[-1], self.out_dim, (), "relu", logvar_min, logvar_max)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x.flatten(start_dim=1)))
