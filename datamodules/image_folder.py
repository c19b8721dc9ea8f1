"""64x64 grey images (sec. 4.4, App. E: 3D Faces, 3D Chairs): any folder of PNG/JPEG files, and
a generated set of rotating shapes for tests and a demo.

Every batch is ``(x: (B, 1, H, W) float32 grey levels in [0, 1], label: (B,) int64)``; H = W = 64
for the conv nets of App. F. The paper's likelihood is Bernoulli on the grey levels (a
cross-entropy with non-binary targets). Images are held in memory as uint8.

- ``ImageFolderDataModule``: every ``*.png``, ``*.jpg``, ``*.jpeg`` below ``root`` (recursive,
  sorted paths), converted to grey with PIL; label = index of the image's top-level subfolder
  (sorted; 0 for images directly in ``root``). Images of another size are an error, unless
  ``resize=true`` (PIL bilinear, antialiased). Users bring their own data (the paper's 3D Faces
  / 3D Chairs renderings are not redistributable here).
- ``ShapesDataModule``: ``n_samples`` images of four flat objects (arrow, L, key, flag), each
  rotated in the image plane by an angle ~ U[0, 2 pi) drawn from ``seed``, rendered in memory
  deterministically (supersampled, box-filtered). Label = object index; a one-parameter family
  per object, like the views of a 3D Chairs object.

Both split the images at random (``seed``) into train/val/test with ``val_fraction`` and
``test_fraction``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vhp_lightning.datamodules.files import read_grey
from vhp_lightning.datamodules.splits import (
    SplitDataModule,
    check_batch_sizes,
    check_fractions,
    split_by_fractions,
)

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg")


class GreyImages(Dataset):
    """``(x: (1, H, W) float32 = grey / 255, label: () int64)`` of ``grey: (N, 1, H, W) uint8``."""

    def __init__(self, grey: torch.Tensor, labels: torch.Tensor) -> None:
        self.grey, self.labels = grey, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grey[i].float() / 255.0, self.labels[i]


def read_image_folder(
    root: str | os.PathLike, size: tuple[int, int] = (64, 64), resize: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images below ``root`` as ``(grey (N, H, W) uint8, labels (N,) int64, class names)``.

    ``size = (H, W)``. Label = index of the top-level subfolder in sorted order ('' for files
    directly in ``root``).

    Raises:
        FileNotFoundError: ``root`` is not a folder or holds no PNG/JPEG images.
        ValueError: images of another size and ``resize`` is off (names the first few files).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist; set dataset.root=<folder of 64x64 PNG/JPEG "
            "images> (e.g. renderings of 3D Faces or 3D Chairs), or try dataset=shapes64"
        )
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not paths:
        raise FileNotFoundError(
            f"no images ({', '.join(EXTENSIONS)}) found below {root}; set dataset.root to a "
            "folder of 64x64 grey images, or try dataset=shapes64"
        )
    folders = [p.relative_to(root).parts[0] if p.parent != root else "" for p in paths]
    classes = sorted(set(folders))
    class_index = {c: i for i, c in enumerate(classes)}
    height, width = size
    images, labels, wrong = [], [], []
    for p, folder in zip(paths, folders, strict=True):
        grey = read_grey(p, "remove or replace it", size if resize else None)
        if grey.shape != (height, width):
            wrong.append(f"{p} ({grey.shape[1]}x{grey.shape[0]})")
            continue
        images.append(grey)
        labels.append(class_index[folder])
    if wrong:
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise ValueError(
            f"{len(wrong)} of {len(paths)} images below {root} are not {width}x{height} "
            f"(width x height): {', '.join(wrong[:3])}{more}. Resize them, or set "
            "dataset.resize=true to resize on loading"
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


# --- the generated shapes ---------------------------------------------------------------------
# Each object is a union of convex polygons (vertices counter-clockwise) and discs
# (cx, cy, r), in units of half the image side, centred on the image centre.
Polygon = list[tuple[float, float]]
SHAPES: dict[str, tuple[list[Polygon], list[tuple[float, float, float]]]] = {
    "arrow": (
        [[(-0.55, -0.08), (0.15, -0.08), (0.15, 0.08), (-0.55, 0.08)],
         [(0.15, -0.3), (0.6, 0.0), (0.15, 0.3)]],
        [],
    ),
    "L": (
        [[(-0.45, -0.45), (0.45, -0.45), (0.45, -0.22), (-0.45, -0.22)],
         [(-0.45, -0.45), (-0.22, -0.45), (-0.22, 0.45), (-0.45, 0.45)]],
        [],
    ),
    "key": (
        [[(-0.15, -0.07), (0.6, -0.07), (0.6, 0.07), (-0.15, 0.07)],
         [(0.38, 0.0), (0.5, 0.0), (0.5, 0.25), (0.38, 0.25)]],
        [(-0.35, 0.0, 0.24)],
    ),
    "flag": (
        [[(-0.45, -0.55), (-0.33, -0.55), (-0.33, 0.55), (-0.45, 0.55)],
         [(-0.33, 0.05), (0.5, 0.3), (-0.33, 0.55)]],
        [(-0.39, -0.55, 0.12)],
    ),
}  # fmt: skip


def render_shapes(
    shape_ids: torch.Tensor,
    angles: torch.Tensor,
    size: int = 64,
    supersample: int = 4,
    chunk: int = 64,
) -> torch.Tensor:
    """Render object ``shape_ids: (N,)`` (indices into ``SHAPES``) rotated counter-clockwise by
    ``angles: (N,)`` radians -> ``(N, 1, size, size)`` float32 in [0, 1] (1 = object)."""
    names = list(SHAPES)
    n_fine = size * supersample
    coords = (torch.arange(n_fine, dtype=torch.float32) + 0.5) / n_fine * 2 - 1
    yy, xx = torch.meshgrid(-coords, coords, indexing="ij")  # y up on screen
    out = []
    for ids, a in zip(shape_ids.split(chunk), angles.to(torch.float32).split(chunk), strict=True):
        cos, sin = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]
        u = cos * xx + sin * yy  # canvas -> object coordinates: rotate by -angle
        v = -sin * xx + cos * yy
        fine = torch.zeros(len(a), n_fine, n_fine, dtype=torch.bool)
        for k, name in enumerate(names):
            sel = ids == k
            if not sel.any():
                continue
            polygons, discs = SHAPES[name]
            us, vs = u[sel], v[sel]
            inside = torch.zeros_like(us, dtype=torch.bool)
            for poly in polygons:
                inside_poly = torch.ones_like(inside)
                for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True):
                    inside_poly &= (x1 - x0) * (vs - y0) - (y1 - y0) * (us - x0) >= 0
                inside |= inside_poly
            for cx, cy, r in discs:
                inside |= (us - cx) ** 2 + (vs - cy) ** 2 <= r * r
            fine[sel] = inside
        out.append(F.avg_pool2d(fine[:, None].float(), supersample))
    return torch.cat(out)


# --- the DataModules ---------------------------------------------------------------------------
class _GreyImageDataModule(SplitDataModule):
    """Shared arguments, random split and loaders; a subclass implements ``_load()`` ->
    ``(grey (N, H, W) uint8, labels (N,) int64)``."""

    name = ""

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 64, 64),
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        batch_size: int = 100,
        eval_batch_size: int = 500,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in data_shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(
                f"{self.name} gives grey images: data_shape must be [1, H, W], got {list(shape)}"
            )
        check_fractions(val_fraction, test_fraction)
        check_batch_sizes(batch_size, eval_batch_size)
        self.data_shape = shape
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.splits: dict[str, GreyImages] = {}

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        grey, labels = self._load()
        n = len(grey)
        perm = np.random.default_rng(self.seed).permutation(n)
        index = split_by_fractions(perm, self.val_fraction, self.test_fraction)
        if len(index["train"]) < 1:
            raise ValueError(f"{self.name}: {n} images leave none for training")
        for split, fraction in (("val", self.val_fraction), ("test", self.test_fraction)):
            if fraction > 0 and len(index[split]) == 0:
                raise ValueError(
                    f"{self.name}: {n} images give an empty {split} split ({split}_fraction = "
                    f"{fraction} of {n} rounds to 0); add images or raise "
                    f"dataset.{split}_fraction"
                )
        grey_t = torch.from_numpy(np.ascontiguousarray(grey))[:, None]
        labels_t = torch.from_numpy(labels)
        self.splits = {k: GreyImages(grey_t[i], labels_t[i]) for k, i in index.items()}
        sizes = "/".join(str(len(index[k])) for k in ("train", "val", "test"))
        log.info("%s: %s train/val/test images", self.name, sizes)


class ImageFolderDataModule(_GreyImageDataModule):
    """Grey images from any folder (sec. 4.4): ``root`` with PNG/JPEG files of size H x W
    (``data_shape = [1, H, W]``), in subfolders per class or not; ``resize`` to fix other sizes.
    """

    name = "image folder"

    def __init__(
        self, root: str | os.PathLike, resize: bool = False, max_images: int | None = None, **kw
    ) -> None:
        super().__init__(**kw)
        self.root, self.resize = Path(root).expanduser(), bool(resize)
        self.max_images = None if max_images is None else int(max_images)
        self.class_names: list[str] = []

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        grey, labels, self.class_names = read_image_folder(
            self.root, self.data_shape[1:], self.resize
        )
        if self.max_images is not None and len(grey) > self.max_images:
            keep = np.random.default_rng(self.seed).permutation(len(grey))[: self.max_images]
            keep = np.sort(keep)
            grey, labels = grey[keep], labels[keep]
        return grey, labels


class ShapesDataModule(_GreyImageDataModule):
    """``n_samples`` generated images of rotating objects (``SHAPES``), deterministic in
    ``seed``: object ``i % 4``, angle ~ U[0, 2 pi). ``self.angles`` holds every image's angle."""

    name = "shapes64"

    def __init__(self, n_samples: int = 4_000, supersample: int = 2, **kw) -> None:
        super().__init__(**kw)
        if self.data_shape[1] != self.data_shape[2]:
            raise ValueError(f"shapes are rendered square, got data_shape {list(self.data_shape)}")
        if n_samples < 3:
            raise ValueError(f"n_samples must be >= 3, got {n_samples}")
        self.n_samples, self.supersample = int(n_samples), int(supersample)
        self.class_names = list(SHAPES)
        self.angles: np.ndarray | None = None

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        g = torch.Generator().manual_seed(self.seed)
        angles = torch.rand(self.n_samples, generator=g, dtype=torch.float64) * (2 * math.pi)
        ids = torch.arange(self.n_samples) % len(SHAPES)
        images = render_shapes(ids, angles, self.data_shape[1], self.supersample)
        self.angles = angles.numpy()
        grey = (images[:, 0] * 255).round().to(torch.uint8).numpy()
        return grey, ids.numpy().astype(np.int64)
