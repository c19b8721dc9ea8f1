"""Reading IDX files (the MNIST file format) with torchvision, and checking files against known
digests.

IDX: a big-endian header ``0x00 0x00 <dtype> <ndim>`` followed by ``ndim`` uint32 sizes, then the
data in row-major order. torchvision's MNIST reader parses it; it reads plain files only, so a
``.gz`` file is first decompressed into a temporary folder with torchvision's ``extract_archive``.

A digest check accepts a file when any of the md5 (torchvision's ``calculate_md5``) or sha256 of
its bytes or, for ``.gz`` files, of its decompressed bytes is among the known values: recompressed
``.gz`` files differ byte for byte from the published ones but decompress to the same data.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
from torchvision.datasets.utils import calculate_md5, extract_archive

from vhp_lightning.datamodules.files import DataFileError, reading


class ChecksumError(ValueError):
    """A data file's digest is not among the known good values."""


@contextmanager
def uncompressed(path: Path, fix: str) -> Iterator[Path]:
    """``path`` itself, or for a ``.gz`` file its content decompressed into a temporary folder
    (removed on exit). A damaged ``.gz`` file raises ``DataFileError`` naming ``path`` and
    ``fix``."""
    if path.suffix != ".gz":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="vhp-idx-") as tmp:
        with reading(path, fix):
            extract_archive(path, tmp)
        yield Path(tmp) / path.stem


def read_idx(content: Path, path: Path, fix: str) -> np.ndarray:
    """The array in the uncompressed IDX file ``content`` (read from ``path``, which errors name
    with ``fix``), in its stored shape and dtype, read with torchvision's MNIST reader."""
    try:
        return read_sn3_pascalvincent_tensor(str(content), strict=True).numpy()
    except (AssertionError, KeyError, RuntimeError, ValueError) as err:
        # torchvision asserts on the header and on the size; without asserts (python -O) a bad
        # dtype is a KeyError and a wrong size a RuntimeError (view) or ValueError (frombuffer)
        raise DataFileError(
            f"{path} is not a valid IDX file, or it is truncated (torchvision's reader: "
            f"{type(err).__name__}{f': {err}' if str(err) else ''}): {fix}"
        ) from err


def file_digests(*paths: Path) -> dict[str, str]:
    """md5 and sha256 of each distinct file, as ``{hex digest: description}``; the first file is
    "the file", the others "the decompressed content"."""
    out: dict[str, str] = {}
    for i, path in enumerate(dict.fromkeys(paths)):
        what = "of the file" if i == 0 else "of the decompressed content"
        out[calculate_md5(path)] = f"md5 {what}"
        out[hashlib.sha256(path.read_bytes()).hexdigest()] = f"sha256 {what}"
    return out


def check_digests(name: str, found: dict[str, str], known: Iterable[str], fix: str) -> None:
    """Raise :class:`ChecksumError` unless one digest in ``found`` is among ``known``.

    ``found`` maps hex digests to what they are of (see :func:`file_digests`); ``name`` and
    ``fix`` make the message.
    """
    known = [k.lower() for k in known]
    if any(d in known for d in found):
        return
    actual = ", ".join(f"{desc} {d}" for d, desc in found.items())
    raise ChecksumError(
        f"checksum mismatch for {name}: expected one of {known}, got {actual}. The file is "
        f"damaged or not the standard release: {fix}, or pass verify=False "
        f"(dataset.verify=false) to skip the check"
    )
