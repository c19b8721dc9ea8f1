"""The 64x64 image-folder DataModule on generated PNG/JPEG files, and the generated shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from vhp_lightning.datamodules.files import DataFileError
from vhp_lightning.datamodules.image_folder import (
    SHAPES,
    ImageFolderDataModule,
    ShapesDataModule,
    read_image_folder,
    render_shapes,
)


def write_image_folder(root: Path, n_per_class: int = 6, size: int = 64) -> Path:
    """Two class subfolders of grey PNGs (a bright square at a varying place), one JPEG in
    ``root`` itself (class '')."""
    rng = np.random.default_rng(0)
    for c in ("chairs", "faces"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            a = np.zeros((size, size), dtype=np.uint8)
            k = int(rng.integers(0, size - 8))
            a[k : k + 8, k : k + 8] = 255
            Image.fromarray(a).save(root / c / f"{i:03d}.png")
    Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8)).save(root / "extra.jpg")
    return root


def test_reads_every_image_grey_with_subfolder_labels(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    grey, labels, classes = read_image_folder(tmp_path)
    assert grey.shape == (13, 64, 64) and grey.dtype == np.uint8
    assert classes == ["", "chairs", "faces"] and np.bincount(labels).tolist() == [1, 6, 6]
    dm = ImageFolderDataModule(tmp_path, val_fraction=0.2, test_fraction=0.2, batch_size=4)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 7, "val": 3, "test": 3}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_wrong_size_is_an_error_unless_resize(tmp_path: Path) -> None:
    write_image_folder(tmp_path, n_per_class=2)
    Image.fromarray(np.zeros((32, 48), dtype=np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png \(48x32\).*dataset\.resize=true"):
        read_image_folder(tmp_path)
    grey, _, _ = read_image_folder(tmp_path, resize=True)
    assert grey.shape == (6, 64, 64)


def test_no_images_or_no_folder_is_explained(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataModule(tmp_path).setup()
    with pytest.raises(FileNotFoundError, match="does not exist.*dataset.root"):
        ImageFolderDataModule(tmp_path / "missing").setup()
    with pytest.raises(ValueError, match=r"data_shape must be \[1, H, W\]"):
        ImageFolderDataModule(tmp_path, data_shape=[3, 64, 64])


def test_max_images_keeps_a_random_subset(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    dm = ImageFolderDataModule(tmp_path, max_images=5, val_fraction=0.0, test_fraction=0.0)
    dm.setup()
    assert len(dm.splits["train"]) == 5


def test_shapes_are_deterministic_and_rotate() -> None:
    a, b = ShapesDataModule(n_samples=24), ShapesDataModule(n_samples=24)
    a.setup()
    b.setup()
    assert torch.equal(a.splits["train"].grey, b.splits["train"].grey)
    other = ShapesDataModule(n_samples=24, seed=1)
    other.setup()
    assert not torch.equal(a.splits["train"].grey, other.splits["train"].grey)
    x, y = next(iter(a.val_dataloader()))
    assert x.shape[1:] == (1, 64, 64) and set(y.tolist()) <= set(range(len(SHAPES)))
    # A quarter turn of the arrow is the image rotated by 90 degrees (pixel-exact on the grid).
    ids = torch.zeros(2, dtype=torch.long)
    img = render_shapes(ids, torch.tensor([0.0, np.pi / 2]))
    assert torch.allclose(torch.rot90(img[0, 0], 1), img[1, 0], atol=1e-5)
    assert 0.05 < img[0].mean() < 0.5  # an object, not an empty or full frame


@pytest.mark.parametrize("dataset", ["image_folder", "shapes64"])
def test_config_is_the_app_f_faces_setting(compose_cfg, dataset: str) -> None:
    cfg = compose_cfg(f"dataset={dataset}", tiny=False)
    assert cfg.model.encoder._target_.endswith("ConvEncoder")
    assert cfg.model.decoder._target_.endswith("ConvDecoder")
    assert cfg.model.encoder.channels == [32, 48, 64, 96] and cfg.model.encoder.out_dim == 32
    assert cfg.model.likelihood._target_.endswith("BernoulliLikelihood")
    assert (cfg.optim.scheme.kappa, cfg.optim.scheme.nu, cfg.optim.optimizer.lr) == (0.2, 1.0, 5e-4)
    assert tuple(cfg.dataset.data_shape) == (1, 64, 64)


def test_faces_experiment_runs_on_the_builtin_shapes(compose_cfg) -> None:
    """The documented demo `experiment=faces_interpolation dataset=shapes64` builds its data
    (no image-folder keys leak into the shapes DataModule) and the conv VHP of App. F."""
    cfg = compose_cfg(
        "experiment=faces_interpolation", "dataset=shapes64", "dataset.n_samples=40", tiny=False
    )
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, ShapesDataModule)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == (1, 64, 64)
    assert cfg.model.encoder._target_.endswith("ConvEncoder")
    assert cfg.callbacks.interpolation.n_nodes == 10000


@pytest.mark.parametrize(
    "content", [b"this is a text file", None], ids=["not-an-image", "truncated-png"]
)
def test_unreadable_image_names_the_file(tmp_path: Path, content: bytes | None) -> None:
    root = write_image_folder(tmp_path)
    bad = root / "faces" / "002.png"
    bad.write_bytes(content if content is not None else bad.read_bytes()[:40])
    with pytest.raises(DataFileError) as err:
        ImageFolderDataModule(root).setup()
    assert str(bad) in str(err.value) and "remove or replace it" in str(err.value)


def test_sixteen_bit_images_and_empty_splits_are_refused(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "deep")
    deep = root / "faces" / "001.png"
    Image.fromarray(np.full((64, 64), 40_000, dtype=np.uint16)).save(deep)  # mode I;16
    with pytest.raises(ValueError, match=r"001\.png has pixel mode 'I;16'.*convert it to 8 bits"):
        ImageFolderDataModule(root).setup()
    small = write_image_folder(tmp_path / "small", n_per_class=2)  # 5 images
    with pytest.raises(ValueError, match=r"5 images give an empty val split .*val_fraction"):
        ImageFolderDataModule(small).setup()
