"""The 28x28 binary image DataModules (datamodules/mnist.py) on tiny generated fixtures.

No network and no real data, except one test that reads the staged MNIST ($VHP_DATA_DIR or
../shared/data) when it exists.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from tests.conftest import STAGED_DATA_HINT, staged_data
from vhp_lightning.datamodules.files import DataFileError
from vhp_lightning.datamodules.idx import ChecksumError, read_idx
from vhp_lightning.datamodules.mnist import (
    FashionMNISTDataModule,
    MNISTDataModule,
    OmniglotDataModule,
    StaticMNISTDataModule,
    amat_to_npz,
    resolve_data_dir,
)

SHARED_DATA = staged_data()
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0x00 0x00 0x08 ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + a.astype(np.uint8).tobytes()


def write_idx_set(
    root: Path, folder: str = "mnist", n: dict | None = None, side: int = 28, gz: bool = True
) -> dict[str, str]:
    """Write the four IDX files (grey images, labels) under ``root/folder``; returns the md5 of
    each file's uncompressed content, for ``checksums=``."""
    n = n or {"train": 30, "test": 10}
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, (image_name, label_name) in IDX_NAMES.items():
        arrays = {
            image_name: rng.integers(0, 256, (n[split], side, side), dtype=np.uint8),
            label_name: np.arange(n[split], dtype=np.uint8) % 10,
        }
        for name, a in arrays.items():
            data = idx_bytes(a)
            sums[name] = hashlib.md5(data).hexdigest()
            path = root / folder / (name + ".gz" if gz else name)
            path.write_bytes(gzip.compress(data) if gz else data)
    return sums


def write_static_npz(root: Path, cols: int = 784) -> dict[str, str]:
    """Write ``binarized_mnist/binarized_mnist.npz`` (30/10/10 rows); returns per-array md5s."""
    rng = np.random.default_rng(1)
    sizes = {"train": 30, "valid": 10, "test": 10}
    arrays = {k: (rng.random((n, cols)) < 0.3).astype(np.uint8) for k, n in sizes.items()}
    (root / "binarized_mnist").mkdir(parents=True)
    np.savez_compressed(root / "binarized_mnist" / "binarized_mnist.npz", **arrays)
    return {k: hashlib.md5(a.tobytes()).hexdigest() for k, a in arrays.items()}


def write_omniglot(root: Path, layout: dict[str, tuple[int, int, int]]) -> None:
    """torchvision's Omniglot folders: ``omniglot-py/<set>/<alphabet>/<character>/*.png``,
    105x105 black strokes (0) on white (255); ``layout[set] = (alphabets, characters, images)``."""
    for s, (n_alpha, n_char, n_img) in layout.items():
        for a in range(n_alpha):
            for c in range(n_char):
                folder = root / "omniglot-py" / s / f"Alphabet_{a}" / f"character{c + 1:02d}"
                folder.mkdir(parents=True)
                for i in range(n_img):
                    img = np.full((105, 105), 255, dtype=np.uint8)
                    img[20:85, 30 + 10 * c + i : 45 + 10 * c + i] = 0  # a thick vertical stroke
                    Image.fromarray(img).convert("1").save(folder / f"{c}_{i:02d}.png")


@pytest.fixture
def mnist_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return tmp_path, write_idx_set(tmp_path)


# ------------------------------------------------------------------ MNIST / Fashion-MNIST


@pytest.mark.parametrize(
    ("cls", "folder", "gz"),
    [
        (MNISTDataModule, "mnist", True),  # staged layout
        (MNISTDataModule, "MNIST/raw", False),  # torchvision's layout, uncompressed
        (FashionMNISTDataModule, "fashion_mnist", True),
        (FashionMNISTDataModule, "FashionMNIST/raw", True),
    ],
)
def test_idx_batches_and_splits(tmp_path: Path, cls: type, folder: str, gz: bool) -> None:
    sums = write_idx_set(tmp_path, folder, gz=gz)
    dm = cls(data_dir=str(tmp_path), n_val=10, batch_size=4, eval_batch_size=7, checksums=sums)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 20, "val": 10, "test": 10}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (4,) and y.dtype == torch.int64
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (7, 1, 28, 28) and y.tolist() == [(20 + i) % 10 for i in range(7)]  # last 10
    assert len(dm.test_dataloader()) == 2


def test_dynamic_binarisation_is_bernoulli_of_grey(mnist_dir: tuple[Path, dict]) -> None:
    dm = MNISTDataModule(str(mnist_dir[0]), n_val=10, verify=False)
    dm.setup()
    train = dm.splits["train"]
    torch.manual_seed(0)
    first, second = train[3][0], train[3][0]
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)
    mean = torch.stack([train[3][0] for _ in range(2000)]).mean(0)
    grey = train.images[3].float() / 255
    assert (mean - grey).abs().mean() < 0.015 and (mean - grey).abs().max() < 0.07


def test_eval_splits_binarised_once_and_train_reproducible(mnist_dir: tuple[Path, dict]) -> None:
    def batches(dm: MNISTDataModule, split: str) -> torch.Tensor:
        return torch.cat([x for x, _ in getattr(dm, f"{split}_dataloader")()])

    dm = MNISTDataModule(str(mnist_dir[0]), n_val=10, batch_size=5, verify=False)
    dm.setup()
    for split in ("val", "test"):  # the same images in every epoch and in a new instance
        other = MNISTDataModule(str(mnist_dir[0]), n_val=10, verify=False)
        other.setup()
        assert torch.equal(batches(dm, split), batches(dm, split))
        assert torch.equal(batches(dm, split), batches(other, split))
    assert not torch.equal(batches(dm, "val"), batches(dm, "test")[:10])
    pl.seed_everything(3)
    a = batches(dm, "train")
    pl.seed_everything(3)
    assert torch.equal(a, batches(dm, "train"))  # seed_everything fixes order and draws
    assert not torch.equal(a, batches(dm, "train"))  # a new epoch draws anew


def test_missing_files_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        MNISTDataModule(str(tmp_path)).setup()
    msg = str(err.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert str(tmp_path / "MNIST/raw") in msg
    assert "data_dir=" in msg and "VHP_DATA_DIR" in msg and "dataset.download=true" in msg


def test_download_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def fake_mnist(root: str, download: bool) -> None:  # writes what torchvision would
        calls.append((root, download))
        write_idx_set(Path(root), "MNIST/raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    dm = MNISTDataModule(str(tmp_path), n_val=10, download=True, verify=False)
    dm.prepare_data()
    dm.prepare_data()  # files present: no second download
    dm.setup()
    assert calls == [(str(tmp_path), True)] and len(dm.splits["train"]) == 20


def test_wrong_image_shape_error(tmp_path: Path) -> None:
    write_idx_set(tmp_path, side=32)
    with pytest.raises(ValueError, match=r"shape \[30, 32, 32\], expected \[N, 28, 28\]") as err:
        MNISTDataModule(str(tmp_path), n_val=10).setup()
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in str(err.value)


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[:-5], lambda b: b + b"\0", lambda b: b"PK\x03\x04" + b[4:], lambda b: b""],
    ids=["truncated", "too-long", "not-idx", "empty"],
)
def test_corrupt_idx_errors(tmp_path: Path, damage) -> None:
    path = tmp_path / "x-idx3-ubyte"
    good = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path.write_bytes(idx_bytes(good))
    assert np.array_equal(read_idx(path, path, "fix"), good)  # torchvision's reader
    path.write_bytes(damage(idx_bytes(good)))
    with pytest.raises(DataFileError, match=rf"^{path} is not a valid IDX file.*: fix$"):
        read_idx(path, path, "fix")


def test_checksum_error(mnist_dir: tuple[Path, dict]) -> None:
    root, sums = mnist_dir
    MNISTDataModule(str(root), n_val=10, checksums=sums).setup()  # the fixture's own digests pass
    with pytest.raises(ChecksumError) as err:  # the real MNIST digests do not
        MNISTDataModule(str(root), n_val=10).setup()
    msg = str(err.value)
    assert "checksum mismatch for " + str(root / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "6bbc9ace898e44ae57da46a324031adb" in msg  # expected
    assert sums["train-images-idx3-ubyte"] in msg  # actual: md5 of the decompressed content
    assert "download it again" in msg and "verify=False" in msg

    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"  # tamper with one label
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[-1] ^= 1
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        MNISTDataModule(str(root), n_val=10, checksums=sums).setup()
    MNISTDataModule(str(root), n_val=10, verify=False).setup()


def test_data_dir_from_env(mnist_dir: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VHP_DATA_DIR", str(mnist_dir[0]))
    dm = MNISTDataModule(n_val=10, checksums=mnist_dir[1])
    assert dm.data_dir == mnist_dir[0]
    dm.setup()
    assert len(dm.splits["test"]) == 10
    monkeypatch.delenv("VHP_DATA_DIR")
    assert resolve_data_dir(None) == Path("data")


def test_argument_errors(mnist_dir: tuple[Path, dict]) -> None:
    with pytest.raises(ValueError, match=r"got data_shape=\[1, 32, 32\]; set dataset.data_shape"):
        MNISTDataModule(str(mnist_dir[0]), data_shape=[1, 32, 32])
    with pytest.raises(ValueError, match="n_val=30 leaves no training images"):
        MNISTDataModule(str(mnist_dir[0]), n_val=30, verify=False).setup()
    with pytest.raises(ValueError, match="fixed validation split"):
        StaticMNISTDataModule(str(mnist_dir[0]), n_val=10)


# ------------------------------------------------------------------ static MNIST


def test_static_mnist(tmp_path: Path) -> None:
    sums = write_static_npz(tmp_path)
    dm = StaticMNISTDataModule(str(tmp_path), batch_size=8, checksums=sums)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 30, "val": 10, "test": 10}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and (y == -1).all()
    with np.load(tmp_path / "binarized_mnist" / "binarized_mnist.npz") as npz:
        train = torch.from_numpy(npz["train"]).float().view(-1, 1, 28, 28)
    assert torch.equal(dm.splits["train"][4][0], train[4])  # fixed: exactly the stored image
    with np.load(tmp_path / "binarized_mnist" / "binarized_mnist.npz") as npz:
        test = torch.from_numpy(npz["test"]).float().view(-1, 1, 28, 28)
    order = np.random.default_rng(0).permutation(10)  # the file's test split is class-ordered:
    assert order.tolist() != list(range(10))  # served in one fixed shuffled order
    served = torch.stack([dm.splits["test"][i][0] for i in range(10)])
    assert torch.equal(served, test[torch.from_numpy(order)])
    assert torch.equal(dm.splits["train"][4][0], dm.splits["train"][4][0])
    with pytest.raises(ChecksumError, match=r"binarized_mnist.npz\['train'\]"):
        StaticMNISTDataModule(str(tmp_path)).setup()  # the real per-array md5s


def test_static_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        StaticMNISTDataModule(str(tmp_path)).setup()
    msg = str(err.value)
    assert str(tmp_path / "binarized_mnist" / "binarized_mnist.npz") in msg
    assert "VHP_DATA_DIR" in msg and "cannot download" in msg and "larocheh" in msg
    write_static_npz(tmp_path, cols=783)
    with pytest.raises(ValueError, match=r"\['train'\] has shape \[30, 783\], expected \[N, 784\]"):
        StaticMNISTDataModule(str(tmp_path)).setup()


def test_amat_to_npz(tmp_path: Path) -> None:
    for s, n in {"train": 3, "valid": 2, "test": 2}.items():
        np.savetxt(tmp_path / f"binarized_mnist_{s}.amat", np.eye(n, 784), fmt="%d")
    amat_to_npz(tmp_path, tmp_path / "binarized_mnist.npz")
    dm = StaticMNISTDataModule(str(tmp_path), verify=False)
    dm.setup()
    assert len(dm.splits["train"]) == 3 and dm.splits["train"][1][0].sum() == 1


# ------------------------------------------------------------------ Omniglot


def test_omniglot_fixture(tmp_path: Path) -> None:
    write_omniglot(tmp_path, {"images_background": (2, 2, 3), "images_evaluation": (1, 2, 2)})
    dm = OmniglotDataModule(str(tmp_path), n_val=2, batch_size=5, download=False)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 10, "val": 2, "test": 4}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    grey = dm.splits["train"].images[0, 0].float() / 255  # inverted: stroke 1, background 0
    assert grey[0, 0] == 0 and grey[14, 10] == 1 and grey.mean() < 0.25
    assert sorted(set(dm.splits["test"].labels.tolist())) == [0, 1]


def test_omniglot_missing_and_zip_checksum(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="omniglot-py/images_background") as err:
        OmniglotDataModule(str(tmp_path)).setup()
    assert "dataset.download=true" in str(err.value)
    write_omniglot(tmp_path, {"images_background": (1, 1, 3), "images_evaluation": (1, 1, 1)})
    zip_path = tmp_path / "omniglot-py" / "images_background.zip"
    zip_path.write_bytes(b"not the real zip")
    with pytest.raises(ChecksumError, match="68d2efa1b9178cc56df9314c21c6e718"):
        OmniglotDataModule(str(tmp_path), n_val=1).setup()
    ok = {"images_background": hashlib.md5(b"not the real zip").hexdigest()}
    OmniglotDataModule(str(tmp_path), n_val=1, checksums=ok).setup()


def test_damaged_omniglot_png_names_the_file(tmp_path: Path) -> None:
    write_omniglot(tmp_path, {"images_background": (1, 1, 3), "images_evaluation": (1, 1, 1)})
    bad = sorted((tmp_path / "omniglot-py" / "images_background").rglob("*.png"))[1]
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataFileError) as err:
        OmniglotDataModule(str(tmp_path), n_val=1).setup()
    assert str(bad) in str(err.value) and "download it again" in str(err.value)


# ------------------------------------------------------------------ the staged real data


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(),
    reason=f"no staged MNIST in {SHARED_DATA}: {STAGED_DATA_HINT}",
)
def test_staged_mnist_loads_verified() -> None:
    dm = MNISTDataModule(str(SHARED_DATA), verify=True)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 50_000, "val": 10_000, "test": 10_000}
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (1000, 1, 28, 28) and set(y.tolist()) == set(range(10))


@pytest.mark.parametrize(
    "damage",
    [lambda b: b"not gzip at all", lambda b: b[: len(b) // 2], lambda b: gzip.compress(b[:-7])],
    ids=["not-gzip", "truncated-gzip", "truncated-idx"],
)
def test_damaged_mnist_file_names_the_file_and_the_fix(tmp_path: Path, damage) -> None:
    write_idx_set(tmp_path)
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(DataFileError) as err:
        MNISTDataModule(str(tmp_path), n_val=10).setup()
    assert str(bad) in str(err.value) and "download it again" in str(err.value)


def test_non_zip_static_mnist_file_names_the_file(tmp_path: Path) -> None:
    write_static_npz(tmp_path)
    bad = tmp_path / "binarized_mnist" / "binarized_mnist.npz"
    bad.write_bytes(b"PK\x03\x04 but not a zip archive")
    with pytest.raises(DataFileError, match=r"cannot read .*binarized_mnist\.npz.*rebuild it"):
        StaticMNISTDataModule(str(tmp_path)).setup()
