"""Plain ``nn.Module`` building blocks (no Lightning): MLPs, Gaussian heads, gated layers."""

from vhp_lightning.nets.conv import ConvDecoder, ConvEncoder, GatedConvDecoder, GatedConvEncoder
from vhp_lightning.nets.gated import GatedConv2d, GatedDense, GatedGaussianMLP
from vhp_lightning.nets.mlp import MLP, GaussianMLP

__all__ = [
    "MLP",
    "GaussianMLP",
    "GatedDense",
    "GatedConv2d",
    "GatedGaussianMLP",
    "GatedConvEncoder",
    "GatedConvDecoder",
    "ConvEncoder",
    "ConvDecoder",
]
