"""The built-in pendulum dataset of sec. 4.1: 16x16 grey images, joint angle ~ U[0, 2 pi).

Nothing is downloaded: the images are rendered deterministically from a seed, in memory (about two
seconds for 15 000 images on two CPU cores). Each sample is
``(image: (1, 16, 16) float32 in [0, 1], angle: () float32)``.

Rendering (decision 9): a rod from the pivot at the image centre to a round bob, drawn on an
``size * supersample`` canvas as hard shapes, box-filtered down to ``size x size`` (anti-aliasing)
and then blurred with a small Gaussian. Angle 0 points straight down and the angle grows
counter-clockwise on screen, so the angle is recoverable from every image (the rod starts at the
pivot: no symmetric bar). The blur keeps the images smooth enough that a 2-d latent reconstructs
them to an RMS error well under kappa = 0.02 (see ``docs/pendulum.md`` for the measured floor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vhp_lightning.datamodules.splits import SplitDataModule, check_batch_sizes


def render_pendulum(
    angles: torch.Tensor,
    size: int = 16,
    supersample: int = 4,
    rod_length: float = 0.34,
    rod_width: float = 0.10,
    bob_radius: float = 0.12,
    blur_sigma: float = 0.6,
    chunk: int = 2048,
) -> torch.Tensor:
    """Render pendulum images for ``angles: (N,)`` (radians) -> ``(N, 1, size, size)`` in [0, 1].

    Lengths are fractions of the image side; ``blur_sigma`` is in output pixels (0 disables it).
    """
    n_fine = size * supersample
    coords = (torch.arange(n_fine, dtype=torch.float32) + 0.5) / n_fine - 0.5  # pivot at 0
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # y grows downwards on screen
    out = []
    for a in angles.to(torch.float32).split(chunk):
        # bob centre; angle 0 = straight down, counter-clockwise on screen
        bx = (rod_length * torch.sin(a))[:, None, None]
        by = (rod_length * torch.cos(a))[:, None, None]
        # distance of every canvas point to the segment pivot -> bob
        t = ((xx * bx + yy * by) / (rod_length**2)).clamp(0.0, 1.0)
        d_rod = torch.hypot(xx - t * bx, yy - t * by)
        d_bob = torch.hypot(xx - bx, yy - by)
        fine = ((d_rod <= rod_width / 2) | (d_bob <= bob_radius)).to(torch.float32)
        out.append(F.avg_pool2d(fine[:, None], supersample))
    img = torch.cat(out)
    if blur_sigma > 0:
        img = _gaussian_blur(img, blur_sigma)
    return (img / img.amax(dim=(1, 2, 3), keepdim=True)).clamp(0.0, 1.0)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0)), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(img, (0, 0, radius, radius)), k.view(1, 1, -1, 1))


class PendulumDataModule(SplitDataModule):
    """15 000 pendulum images (sec. 4.1) split into train/val/test, generated from ``seed``.

    The split is ``n_val`` and ``n_test`` images held out of ``n_samples`` (defaults 12 000 /
    1 500 / 1 500). Batches are ``(x: (B, 1, 16, 16), angle: (B,))``.
    """

    def __init__(
        self,
        n_samples: int = 15_000,
        n_val: int = 1_500,
        n_test: int = 1_500,
        data_shape: tuple[int, int, int] | list[int] = (1, 16, 16),
        batch_size: int = 128,
        eval_batch_size: int = 1_000,
        seed: int = 0,
        num_workers: int = 0,
        render: dict | None = None,
    ) -> None:
        super().__init__()
        if n_val + n_test >= n_samples:
            raise ValueError(
                f"n_val + n_test ({n_val} + {n_test}) must be below n_samples ({n_samples})"
            )
        shape = tuple(int(d) for d in data_shape)
        if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
            raise ValueError(
                f"the pendulum renders square grey images: data_shape must be [1, S, S], got "
                f"{list(shape)}"
            )
        check_batch_sizes(batch_size, eval_batch_size)
        self.n_samples, self.n_val, self.n_test = n_samples, n_val, n_test
        self.size, self.seed = shape[1], seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.render_kwargs = dict(render or {})
        self.data_shape = shape
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        g = torch.Generator().manual_seed(self.seed)
        angles = torch.rand(self.n_samples, generator=g, dtype=torch.float64) * (2 * math.pi)
        images = render_pendulum(angles, size=self.size, **self.render_kwargs)
        angles = angles.to(torch.float32)
        n_train = self.n_samples - self.n_val - self.n_test
        bounds = {"train": (0, n_train), "val": (n_train, n_train + self.n_val)}
        bounds["test"] = (n_train + self.n_val, self.n_samples)
        self.splits = {k: TensorDataset(images[a:b], angles[a:b]) for k, (a, b) in bounds.items()}
