"""The 28x28 binary image benchmarks of sec. 4.3 / Table 2: dynamic MNIST, static MNIST,
Fashion-MNIST and Omniglot.

Every batch is ``(x: (B, 1, 28, 28) float32 in {0, 1}, label: (B,) int64)``.

- Dynamic binarisation (MNIST, Fashion-MNIST, Omniglot): each time a training image is drawn,
  ``x ~ Bernoulli(grey / 255)`` with torch's global RNG, so ``seed_everything(workers=True)``
  makes the draws reproducible. The val and test images are binarised ONCE, with
  ``torch.Generator`` seeds ``seed + 1`` (val) and ``seed + 2`` (test), so that validation and
  test numbers are comparable across epochs and runs.
- Static MNIST is the fixed binarisation of Larochelle & Murray (2011); it has no labels, so its
  label is always -1.

Files live under ``data_dir`` (argument, else the env var ``VHP_DATA_DIR``, else ``./data``), in
either the staged layout (``mnist/``, ``fashion_mnist/``, ``binarized_mnist/``, ``omniglot/``)
or torchvision's (``MNIST/raw/``, ``FashionMNIST/raw/``, ``omniglot-py/``); IDX files may be
gzipped or not. Each file read is checked against known md5/sha256 digests (``verify=True``);
tests pass their own with ``checksums={name: digest}``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vhp_lightning.datamodules.files import ENV_VAR, read_grey, reading, resolve_data_dir
from vhp_lightning.datamodules.idx import check_digests, file_digests, read_idx, uncompressed
from vhp_lightning.datamodules.splits import SplitDataModule, check_batch_sizes
from vhp_lightning.io.config_values import positive_int_or_none

log = logging.getLogger(__name__)

IMAGE_SHAPE = (1, 28, 28)

# Known good digests per file (name without .gz): md5 of the uncompressed file, md5 of the
# upstream .gz (the value torchvision checks), sha256 of the staged .gz (shared/data/SHA256SUMS).
MNIST_DIGESTS: dict[str, tuple[str, ...]] = {
    "train-images-idx3-ubyte": (
        "6bbc9ace898e44ae57da46a324031adb",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    ),
    "train-labels-idx1-ubyte": (
        "a25bea736e30d166cdddb491f175f624",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    ),
    "t10k-images-idx3-ubyte": (
        "2646ac647ad5339dbf082846283269ea",
        "9fb629c4189551a2d022fa330f9573f3",
        "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    ),
    "t10k-labels-idx1-ubyte": (
        "27ae3e4e09519cfbb04c329615203637",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
    ),
}
FASHION_MNIST_DIGESTS: dict[str, tuple[str, ...]] = {
    "train-images-idx3-ubyte": (
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    "train-labels-idx1-ubyte": (
        "9018921c3c673c538a1fc5bad174d6f9",
        "25c81989df183df01b3e8a0aad5dffbe",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    "t10k-images-idx3-ubyte": (
        "8181f5470baa50b63fa0f6fddb340f0a",
        "bef4ecab320f06d8554ea6380940ec79",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    "t10k-labels-idx1-ubyte": (
        "15d484375f8d13e6eb1aabb0c3f46965",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
}
# md5 of each array's ``a.tobytes()`` (the npz container's own hash varies with zip timestamps).
STATIC_MNIST_DIGESTS: dict[str, tuple[str, ...]] = {
    "train": ("8d4f0427d6c2572b5e9994e08bad66de",),
    "valid": ("3e33becd40c694040e5e6c812e2f4b50",),
    "test": ("fc34623e13bd64fed2f8b61365198339",),
}
# md5 of torchvision's Omniglot zips; checked when the zip lies beside the extracted folder.
OMNIGLOT_DIGESTS: dict[str, tuple[str, ...]] = {
    "images_background": ("68d2efa1b9178cc56df9314c21c6e718",),
    "images_evaluation": ("6b91aef0f799c5bb55b94e3f2daec811",),
}
STATIC_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"

Split = tuple[np.ndarray, np.ndarray]  # grey levels (N, 28, 28) uint8, labels (N,) int64


class BinaryImages(Dataset):
    """Binary images ``(x: (1, H, W) float32 in {0, 1}, label: () int64)`` from grey levels.

    ``grey: (N, 1, H, W) uint8`` in 0..255. With ``dynamic`` every access draws
    ``x ~ Bernoulli(grey / 255)`` from torch's global RNG; otherwise the images are binarised once
    here with a ``torch.Generator`` seeded with ``seed``.
    """

    def __init__(self, grey: torch.Tensor, labels: torch.Tensor, dynamic: bool, seed: int = 0):
        if dynamic:
            self.images = grey
        else:
            g = torch.Generator().manual_seed(seed)
            self.images = torch.bernoulli(grey.float() / 255, generator=g).to(torch.uint8)
        self.labels, self.dynamic = labels, dynamic

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float()
        return (torch.bernoulli(x / 255) if self.dynamic else x), self.labels[i]


class BinaryImageDataModule(SplitDataModule):
    """Shared machinery of the 28x28 binary image datasets: arguments, data_dir, splits, loaders.

    A subclass names its files (or folders) ``names`` and where they may lie, ``folders`` under
    ``data_dir``; it implements ``_load() -> {"train", "val", "test": (grey (N, 28, 28) uint8,
    labels (N,) int64)}`` (finding its files with ``_find_or_download``) and, if torchvision can
    fetch them, ``_download()``. ``n_val=None`` takes the dataset's ``default_n_val``;
    ``checksums`` maps a file name to its accepted digest(s), replacing the known values for that
    name (tests use it for fixtures).
    """

    name = ""  # for messages
    dynamic = True  # binarise the training images afresh on every draw
    default_n_val: int | None = None
    names: tuple[str, ...] = ()  # the files (or folders) the dataset reads
    folders: tuple[str, ...] = ()  # where they may lie, relative to data_dir
    how_to_get = ", or set dataset.download=true to let torchvision download them"  # messages

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 1_000,
        num_workers: int = 0,
        download: bool = False,
        data_shape: tuple[int, int, int] | list[int] = IMAGE_SHAPE,
        seed: int = 0,
        n_val: int | None = None,
        verify: bool = True,
        checksums: dict[str, str | list[str]] | None = None,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in data_shape)
        if shape != IMAGE_SHAPE:
            raise ValueError(
                f"{self.name} images have shape {list(IMAGE_SHAPE)}, got data_shape="
                f"{list(shape)}; set dataset.data_shape=[1, 28, 28]"
            )
        check_batch_sizes(batch_size, eval_batch_size)
        if n_val is not None and self.default_n_val is None:
            raise ValueError(f"{self.name} has a fixed validation split; leave n_val unset (null)")
        n_val = positive_int_or_none("dataset.n_val", n_val, "the dataset's default")
        self.n_val = self.default_n_val if n_val is None else n_val
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.download, self.seed = num_workers, download, seed
        self.data_shape, self.verify = IMAGE_SHAPE, verify
        checksums = dict(checksums or {})
        self.checksums = {k: [v] if isinstance(v, str) else list(v) for k, v in checksums.items()}
        self.splits: dict[str, BinaryImages] = {}

    def known_digests(self, name: str, table: dict[str, tuple[str, ...]]) -> list[str]:
        """Accepted digests of file ``name``: ``checksums[name]`` if given, else ``table[name]``."""
        return self.checksums.get(name, list(table.get(name, ())))

    def _load(self) -> dict[str, Split]:
        raise NotImplementedError

    def _download(self) -> None:
        """Fetch the files into ``data_dir`` (only called when some are missing)."""

    def _candidates(self, name: str) -> list[Path]:
        """The paths where ``name`` may lie, in order of preference."""
        return [self.data_dir / f / name for f in self.folders]

    def _find(self) -> tuple[dict[str, Path], list[str]]:
        """``({name: first of its candidates that exists}, [names with none])`` over ``names``."""
        found, missing = {}, []
        for name in self.names:
            path = next((p for p in self._candidates(name) if p.exists()), None)
            if path is None:
                missing.append(name)
            else:
                found[name] = path
        return found, missing

    def _not_found(self, missing: list[str]) -> FileNotFoundError:
        """The error for the ``missing`` names: where they were looked for and the fix."""
        paths = ", ".join(str(self._candidates(name)[0]) for name in missing)
        where = " and ".join(f"{self.data_dir / f}/" for f in self.folders)
        holds = " or ".join(f"{f}/" for f in self.folders if f != ".")
        return FileNotFoundError(
            f"{self.name} files not found: {paths} (looked in {where}). Fix: pass data_dir= "
            f"(dataset.data_dir=... or set {ENV_VAR}) pointing at the folder that holds "
            f"{holds}{self.how_to_get}"
        )

    def _find_or_download(self) -> dict[str, Path]:
        """``{name: path}`` of every one of ``names``; downloads missing ones first when
        ``download`` is set; raises ``_not_found`` for any still missing."""
        found, missing = self._find()
        if missing and self.download:
            self._download()
            found, missing = self._find()
        if missing:
            raise self._not_found(missing)
        return found

    def _n_train(self, n: int, where: Path) -> int:
        """How many of the ``n`` training-set images (read from ``where``) are left for training
        once ``n_val`` are held out for validation; ``ValueError`` if none."""
        n_val = self.n_val or 0
        if n_val >= n:
            raise ValueError(
                f"n_val={n_val} leaves no training images ({n} in {where}); choose n_val < {n}"
            )
        return n - n_val

    def prepare_data(self) -> None:
        if self.download and self._find()[1]:
            self._download()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self._load()
        for i, split in enumerate(("train", "val", "test")):  # seeds: seed, seed + 1, seed + 2
            grey, labels = data[split]
            grey_t = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.uint8))[:, None]
            labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
            dynamic = self.dynamic and split == "train"
            self.splits[split] = BinaryImages(grey_t, labels_t, dynamic, seed=self.seed + i)
        sizes = "/".join(str(len(self.splits[s])) for s in ("train", "val", "test"))
        log.info("%s: %s train/val/test images from %s", self.name, sizes, self.data_dir)


def _check_images(images: np.ndarray, where: str) -> None:
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[1:]:
        raise ValueError(
            f"{where} holds data of shape {list(images.shape)}, expected [N, 28, 28] "
            f"(28x28 images); it is not the expected dataset file: delete it and fetch it again"
        )


class _IDXDataModule(BinaryImageDataModule):
    """MNIST-format data: four IDX files, val = the last ``n_val`` training images."""

    known: dict[str, tuple[str, ...]] = {}  # accepted digests per file name
    torchvision_name = ""  # the torchvision.datasets class that downloads the files
    default_n_val = 10_000
    files = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    names = (*files["train"], *files["test"])

    def _candidates(self, name: str) -> list[Path]:  # gzipped or not
        return [self.data_dir / f / n for f in self.folders for n in (name + ".gz", name)]

    def _download(self) -> None:
        import torchvision

        log.info("%s: downloading into %s with torchvision", self.name, self.data_dir)
        getattr(torchvision.datasets, self.torchvision_name)(root=str(self.data_dir), download=True)

    def _read(self, name: str, path: Path) -> np.ndarray:
        """Read the IDX file ``path`` (torchvision's reader), check its image shape, then its
        digest."""
        fix = "delete it and download it again (dataset.download=true)"
        with uncompressed(path, fix) as content:
            array = read_idx(content, path, fix)
            if "idx3" in name:
                _check_images(array, str(path))
            if self.verify:
                known = self.known_digests(name, self.known)
                check_digests(str(path), file_digests(path, content), known, fix)
        return array

    def _load(self) -> dict[str, Split]:
        found = self._find_or_download()
        out = {}
        for split, (image_name, label_name) in self.files.items():
            images = self._read(image_name, found[image_name])
            labels = self._read(label_name, found[label_name])
            if labels.shape != images.shape[:1]:
                raise ValueError(
                    f"{found[label_name]} holds labels of shape {list(labels.shape)}, expected "
                    f"[{len(images)}] to match {found[image_name]}; delete both and download them "
                    f"again"
                )
            out[split] = (images, labels.astype(np.int64))
        x, y = out.pop("train")
        k = self._n_train(len(x), found[self.files["train"][0]])
        return {"train": (x[:k], y[:k]), "val": (x[k:], y[k:]), "test": out["test"]}


class MNISTDataModule(_IDXDataModule):
    """Dynamically binarised MNIST: 50 000 train / 10 000 val (the last 10 000 of the 60 000
    training images) / 10 000 test; labels are the digits 0..9.
    """

    name = "MNIST"
    folders = ("mnist", "MNIST/raw")
    known = MNIST_DIGESTS
    torchvision_name = "MNIST"


class FashionMNISTDataModule(_IDXDataModule):
    """Dynamically binarised Fashion-MNIST: 50 000 train / 10 000 val (the last 10 000 of the
    60 000 training images) / 10 000 test; labels are the 10 clothing classes.
    """

    name = "Fashion-MNIST"
    folders = ("fashion_mnist", "FashionMNIST/raw")
    known = FASHION_MNIST_DIGESTS
    torchvision_name = "FashionMNIST"


def amat_to_npz(folder: str | os.PathLike, out: str | os.PathLike) -> None:
    """Convert Larochelle's ``binarized_mnist_{train,valid,test}.amat`` (from
    ``STATIC_MNIST_URL``) in ``folder`` into the ``binarized_mnist.npz`` that
    :class:`StaticMNISTDataModule` reads (about a minute).
    """

    def load(split: str) -> np.ndarray:
        return np.loadtxt(Path(folder) / f"binarized_mnist_{split}.amat", dtype=np.uint8)

    np.savez_compressed(out, train=load("train"), valid=load("valid"), test=load("test"))


class StaticMNISTDataModule(BinaryImageDataModule):
    """Statically binarised MNIST (Larochelle & Murray 2011): 50 000 train / 10 000 val /
    10 000 test, fixed {0, 1} images from ``binarized_mnist.npz`` (keys train, valid, test, each
    (N, 784) uint8). The file has no labels: every label is -1. Its test split is ordered by digit
    class (all 0s first), so it is served in one fixed random order (the permutation of
    ``TEST_ORDER_SEED``, the same in every run): a test on its first N images (``test_nll_images``)
    then scores a sample of every class, not 0s and 1s only, and two runs' per-image values pair
    by index as before.
    """

    TEST_ORDER_SEED = 0

    name = "static MNIST"
    dynamic = False
    names = ("binarized_mnist.npz",)
    folders = ("binarized_mnist", ".")
    keys = {"train": "train", "val": "valid", "test": "test"}
    how_to_get = (
        f". torchvision cannot download it (dataset.download=true does not help): get "
        f"binarized_mnist_{{train,valid,test}}.amat from {STATIC_MNIST_URL} and convert them "
        f"with vhp_lightning.datamodules.mnist.amat_to_npz"
    )

    def _load(self) -> dict[str, Split]:
        path = self._find_or_download()[self.names[0]]
        out = {}
        with reading(path, "delete it and rebuild it (amat_to_npz)"), np.load(path) as npz:
            absent = [k for k in self.keys.values() if k not in npz.files]
            if absent:
                raise ValueError(
                    f"{path} lacks the arrays {absent} (it has {npz.files}); expected keys "
                    f"train, valid, test: delete it and rebuild it"
                )
            for split, key in self.keys.items():
                a = npz[key]
                where = f"{path}['{key}']"
                if a.ndim != 2 or a.shape[1] != 784:
                    raise ValueError(
                        f"{where} has shape {list(a.shape)}, expected [N, 784] (one 28x28 image "
                        f"per row); delete the file and rebuild it"
                    )
                if a.size and (a.min() < 0 or a.max() > 1):
                    raise ValueError(f"{where} is not binary (values outside {{0, 1}})")
                if self.verify:
                    found = {hashlib.md5(a.tobytes()).hexdigest(): "md5 of a.tobytes()"}
                    known = self.known_digests(key, STATIC_MNIST_DIGESTS)
                    check_digests(where, found, known, "delete the file and rebuild it")
                if split == "test":
                    a = a[np.random.default_rng(self.TEST_ORDER_SEED).permutation(len(a))]
                grey = a.reshape(-1, 28, 28).astype(np.uint8) * 255  # binarising 0/255 is exact
                out[split] = (grey, np.full(len(a), -1, dtype=np.int64))
        return out


class OmniglotDataModule(BinaryImageDataModule):
    """Dynamically binarised Omniglot, from torchvision's folders (brendenlake/omniglot).

    Train/val come from ``images_background`` (19 280 images, 964 characters): ``n_val`` = 1 345
    images chosen at random with ``seed`` are held out, leaving 17 935 for training; test is
    ``images_evaluation`` (13 180 images, 659 characters). This is NOT the 24 345 / 8 070 split of
    ``chardata.mat`` (Burda et al.) behind Table 2, so test NLLs are not directly comparable.
    Each 105x105 PNG is resized to 28x28 with PIL's antialiased bilinear filter (torchvision's
    ``Resize`` default) and inverted, so strokes are 1 on a 0 background. Labels index the
    characters of the set (alphabets and characters in sorted order). Folder layout
    ``<data_dir>/omniglot-py/images_background/<alphabet>/<character>/*.png`` (or ``omniglot/``);
    the zip's md5 is checked if it lies beside its folder, otherwise the PNGs are read unverified.
    Reading the ~32 000 PNGs takes some seconds.
    """

    name = "Omniglot"
    folders = ("omniglot-py", "omniglot")
    default_n_val = 1_345
    sets = {"train": "images_background", "test": "images_evaluation"}
    names = tuple(sets.values())

    def _download(self) -> None:
        from torchvision.datasets import Omniglot

        log.info("%s: downloading into %s with torchvision", self.name, self.data_dir)
        for background in (True, False):
            Omniglot(root=str(self.data_dir), background=background, download=True)

    def _read(self, folder: Path) -> Split:
        zip_path = folder.with_suffix(".zip")
        if self.verify and zip_path.is_file():
            known = self.known_digests(folder.name, OMNIGLOT_DIGESTS)
            fix = "delete it and download it again"
            check_digests(str(zip_path), file_digests(zip_path), known, fix)
        elif self.verify:
            log.warning("%s: %s has no %s beside it; read unverified", self.name, folder, zip_path)
        characters = sorted(c for c in folder.glob("*/*") if c.is_dir())
        images, labels = [], []
        for label, character in enumerate(characters):
            for png in sorted(character.glob("*.png")):
                images.append(255 - read_grey(png, "delete it and download it again", (28, 28)))
                labels.append(label)
        if not images:
            raise FileNotFoundError(
                f"{folder} holds no <alphabet>/<character>/*.png images; delete it and download "
                f"it again (dataset.download=true)"
            )
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    def _load(self) -> dict[str, Split]:
        found = self._find_or_download()
        x, y = self._read(found[self.sets["train"]])
        n_val = len(x) - self._n_train(len(x), found[self.sets["train"]])
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed)).numpy()
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        test = self._read(found[self.sets["test"]])
        return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": test}
