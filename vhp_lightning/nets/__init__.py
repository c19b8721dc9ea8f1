"""Plain ``nn.Module`` building blocks (no Lightning): MLPs, Gaussian heads, gated layers."""

from vhp_lightning.nets.mlp import MLP, GaussianMLP

__all__ = ["MLP", "GaussianMLP"]
