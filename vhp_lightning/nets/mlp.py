"""Fully-connected networks of App. F (pendulum, CMU: FC 256 x 4, ReLU)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

INITS = ("torch", "he")
# He init's gain per activation (torch.nn.init.calculate_gain); "linear" for the others.
_HE_GAINS: dict[str, Literal["relu", "leaky_relu", "tanh", "linear"]] = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
}


def _activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
    if name not in table:
        raise ValueError(f"Unknown activation {name!r}. Choose one of: {', '.join(table)}.")
    return table[name]()


class MLP(nn.Module):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim`` with an activation between layers.

    Inputs of shape ``(..., *in_shape)`` are flattened over their trailing dims, so an image batch
    ``(B, C, H, W)`` works when ``in_dim = C * H * W``. Output ``(B, out_dim)``; no activation on
    the last layer.

    ``init``: ``"torch"`` keeps PyTorch's default ``nn.Linear`` initialisation, which shrinks the
    signal by about sqrt(6) per ReLU layer; ``"he"`` draws weights He-uniform for the activation
    (He et al., 2015) with zero biases, so the output depends on the input at initialisation
    (docs/pendulum.md: with ``"torch"`` the VHP's prior nets start, and stay, collapsed).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256, 256, 256),
        activation: str = "relu",
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"Unknown init {init!r}. Choose one of: {', '.join(INITS)}.")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        dims = [self.in_dim, *[int(h) for h in hidden]]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), _activation(activation)]
        layers.append(nn.Linear(dims[-1], self.out_dim))
        self.net = nn.Sequential(*layers)
        if init == "he":
            gain = _HE_GAINS.get(activation, "linear")
            for layer in layers:
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_uniform_(layer.weight, nonlinearity=gain)
                    nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2 or x.shape[-1] != self.in_dim:
            x = x.flatten(start_dim=1)
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"MLP expects {self.in_dim} input features, got a batch of shape "
                f"{tuple(x.shape)}; check the dataset's data_shape against the model config."
            )
        return self.net(x)


class GaussianMLP(nn.Module):
    """A diagonal Gaussian whose mean and log-variance are an MLP of the input.

    Used for q_phi(z|x), q_Phi(zeta|z) and p_Theta(z|zeta). ``forward(x: (B, in_dim))`` returns
    ``(mean, logvar)``, each ``(B, out_dim)``; the log-variance is soft-clamped to
    ``[logvar_min, logvar_max]`` so exp(-logvar) in the log-density cannot overflow.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256, 256, 256),
        activation: str = "relu",
        logvar_min: float = -12.0,
        logvar_max: float = 6.0,
        init: str = "torch",
    ) -> None:
        super().__init__()
        self.out_dim = int(out_dim)
        self.body = MLP(in_dim, 2 * self.out_dim, hidden, activation, init)
        if not logvar_min < 0.0 < logvar_max:
            raise ValueError(f"need logvar_min < 0 < logvar_max, got {logvar_min}, {logvar_max}")
        self.logvar_min, self.logvar_max = float(logvar_min), float(logvar_max)
        p = -self.logvar_min / (self.logvar_max - self.logvar_min)
        self._offset = math.log(p / (1.0 - p))  # raw output 0 -> logvar 0 (unit variance)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.body(x).chunk(2, dim=-1)
        span = self.logvar_max - self.logvar_min
        logvar = self.logvar_min + span * torch.sigmoid(raw + self._offset)
        return mean, logvar
