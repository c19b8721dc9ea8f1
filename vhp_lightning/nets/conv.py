"""Convolutional encoders and decoders of App. F (Table 3).

* ``GatedConvEncoder`` / ``GatedConvDecoder``: the MNIST family (28x28x1, latent 32), the
  gated-conv networks of Tomczak & Welling's VampPrior code;
* ``ConvEncoder`` / ``ConvDecoder``: Faces and Chairs (64x64x1, latent 32), plain convolutions
  with ReLU and a transposed-convolution decoder mirroring the encoder.

Encoders take ``x: (B, C, H, W)`` (or flattened ``(B, C*H*W)``) and return ``(mean, logvar)``,
each ``(B, out_dim)``, with the log-variance bounded as in ``GaussianMLP`` (their heads are a
``GaussianMLP`` without hidden layers). Decoders take ``z: (B, in_dim)`` and return the
likelihood's parameters (Bernoulli logits: linear activation) as ``(B, C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vhp_lightning.nets.gated import GatedConv2d, GatedDense
from vhp_lightning.nets.mlp import GaussianMLP


def _image_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in data_shape)
    if len(shape) != 3:
        raise ValueError(
            f"convolutional nets need data_shape = [channels, height, width], got {list(shape)}; "
            "use the MLP nets (paper/nets=mlp) for flat data."
        )
    return shape


def _as_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` or ``(B, C*H*W)`` -> ``(B, C, H, W)``, with an error naming the mismatch."""
    if tuple(x.shape[1:]) == shape:
        return x
    if x.dim() == 2 and x.shape[1] == math.prod(shape):
        return x.view(-1, *shape)
    raise ValueError(
        f"expected a batch of images of shape (B, {', '.join(map(str, shape))}), got "
        f"{tuple(x.shape)}; check the dataset's data_shape against the model config."
    )


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def _stage_grid(net: str, shape: tuple[int, int, int], n_stages: int) -> tuple[int, int]:
    """``(H, W) / 2 ** n_stages``: the feature map after ``n_stages`` stride-2 stages of ``net``
    (``ConvEncoder``; ``ConvDecoder`` starts from it), with an error unless it divides exactly."""
    _, height, width = shape
    scale = 2**n_stages
    if height % scale or width % scale:
        raise ValueError(
            f"{net} with {n_stages} stride-2 stages needs height and width divisible by {scale}, "
            f"got data_shape {list(shape)}"
        )
    return height // scale, width // scale


# (out_channels, kernel, stride, padding) of q_phi(z|x) for the MNIST family (Table 3); the
# paddings keep 'same' size at stride 1 and halve it at stride 2: 28 -> 28 -> 14 -> 14 -> 7 -> 7.
GATED_ENCODER_LAYERS = ((32, 7, 1, 3), (32, 3, 2, 1), (64, 5, 1, 2), (64, 3, 2, 1), (6, 3, 1, 1))


class GatedConvEncoder(nn.Module):
    """q_phi(z|x) of the MNIST family: GatedConv 32x7x7/1, 32x3x3/2, 64x5x5/1, 64x3x3/2, 6x3x3/1.

    The 6x7x7 = 294 features (for 28x28 inputs) go to linear heads for mean and log-variance.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        out_dim: int = 32,
        logvar_min: float = -12.0,
        logvar_max: float = 6.0,
    ) -> None:
        super().__init__()
        self.data_shape, self.out_dim = _image_shape(data_shape), int(out_dim)
        channels, height, width = self.data_shape
        layers = []
        for out_ch, kernel, stride, padding in GATED_ENCODER_LAYERS:
            layers.append(GatedConv2d(channels, out_ch, kernel, stride, padding))
            channels = out_ch
            height = _conv_out(height, kernel, stride, padding)
            width = _conv_out(width, kernel, stride, padding)
        self.body = nn.Sequential(*layers)
        self.feature_dim = channels * height * width
        self.head = GaussianMLP(self.feature_dim, self.out_dim, (), "relu", logvar_min, logvar_max)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(_as_images(x, self.data_shape))
        return self.head(h.flatten(start_dim=1))


class GatedConvDecoder(nn.Module):
    """p_theta(x|z) of the MNIST family: GatedFC to C*H*W (784), reshape to an image,
    ``n_layers`` GatedConv ``channels``x3x3/1, then a 1x1 convolution to C channels of logits
    (linear activation; Table 3, and the final layer of the VampPrior code).
    """

    def __init__(
        self,
        in_dim: int = 32,
        data_shape: Sequence[int] = (1, 28, 28),
        channels: int = 64,
        n_layers: int = 4,
    ) -> None:
        super().__init__()
        self.in_dim, self.data_shape = int(in_dim), _image_shape(data_shape)
        self.fc = GatedDense(self.in_dim, math.prod(self.data_shape))
        c_in, layers = self.data_shape[0], []
        for _ in range(int(n_layers)):
            layers.append(GatedConv2d(c_in, int(channels), 3, 1, 1))
            c_in = int(channels)
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c_in, self.data_shape[0], kernel_size=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, *self.data_shape)
        return self.out(self.body(h))


class ConvEncoder(nn.Module):
    """q_phi(z|x) of Faces/Chairs: per entry c of ``channels`` a Conv c x5x5 (stride 2) and a Conv
    c x3x3 (stride 1), ReLU after each, then FC ``hidden`` with ReLU and the Gaussian heads.

    Table 3 (32, 48, 64, 96): 64x64 -> 32 -> 16 -> 8 -> 4, so 96*4*4 features into FC 256. Any
    H, W divisible by 2 ** len(channels) works.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 64, 64),
        out_dim: int = 32,
        channels: Sequence[int] = (32, 48, 64, 96),
        hidden: int = 256,
        logvar_min: float = -12.0,
        logvar_max: float = 6.0,
    ) -> None:
        super().__init__()
        self.data_shape, self.out_dim = _image_shape(data_shape), int(out_dim)
        height, width = _stage_grid("ConvEncoder", self.data_shape, len(channels))
        c_in = self.data_shape[0]
        layers: list[nn.Module] = []
        for c in (int(c) for c in channels):
            layers += [nn.Conv2d(c_in, c, 5, 2, 2), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in * height * width
        self.fc = nn.Sequential(nn.Linear(self.feature_dim, int(hidden)), nn.ReLU())
        self.head = GaussianMLP(int(hidden), self.out_dim, (), "relu", logvar_min, logvar_max)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(_as_images(x, self.data_shape))
        return self.head(self.fc(h.flatten(start_dim=1)))


class ConvDecoder(nn.Module):
    """p_theta(x|z) of Faces/Chairs, the reverse of ``ConvEncoder`` (Table 3: "deconv reverse of
    encoder"): FC ``hidden``, FC to 96x4x4, then per stage (deepest first) a ConvTranspose c x3x3
    (stride 1) and a ConvTranspose 5x5 (stride 2) to the previous stage's channels, ReLU between
    layers; the last layer gives C channels of logits (linear activation).
    """

    def __init__(
        self,
        in_dim: int = 32,
        data_shape: Sequence[int] = (1, 64, 64),
        channels: Sequence[int] = (32, 48, 64, 96),
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.in_dim, self.data_shape = int(in_dim), _image_shape(data_shape)
        height, width = _stage_grid("ConvDecoder", self.data_shape, len(channels))
        chans = [self.data_shape[0], *[int(c) for c in channels]]
        self.start_shape = (chans[-1], height, width)
        self.fc = nn.Sequential(
            nn.Linear(self.in_dim, int(hidden)),
            nn.ReLU(),
            nn.Linear(int(hidden), math.prod(self.start_shape)),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for c, c_prev in zip(chans[:0:-1], chans[-2::-1], strict=True):
            layers += [
                nn.ConvTranspose2d(c, c, 3, 1, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(c, c_prev, 5, 2, 2, output_padding=1),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers[:-1])  # no activation after the last layer: logits

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(-1, *self.start_shape))
