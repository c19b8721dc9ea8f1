"""Reading IDX files (the MNIST file format) and checking files against known digests.

IDX: a big-endian header ``0x00 0x00 <dtype> <ndim>`` followed by ``ndim`` uint32 sizes, then the
data in row-major order (images start at byte 16, labels at byte 8). Files may be gzipped.

A digest check accepts a file when any of the md5/sha256 of its bytes or, for ``.gz`` files, of
its decompressed bytes is among the known values: recompressed ``.gz`` files differ byte for byte
from the published ones but decompress to the same data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vhp_lightning.datamodules.files import DataFileError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ChecksumError(ValueError):
    """A data file's digest is not among the known good values."""


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode the IDX bytes ``data`` (read from ``path``, named in errors) -> array of its shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFileError(
            f"{path} is not an IDX file (header {data[:4].hex()}, expected 0000<dtype><ndim>); "
            f"delete it and download it again"
        )
    ndim = data[3]
    offset = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    if len(data) != offset + n_bytes:
        raise DataFileError(
            f"{path} is truncated or corrupt: its header says shape {list(shape)} "
            f"({offset + n_bytes} bytes) but it holds {len(data)} bytes; delete it and download "
            f"it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def digests(*contents: bytes) -> dict[str, str]:
    """md5 and sha256 of each distinct byte string, as ``{hex digest: description}``."""
    out: dict[str, str] = {}
    for i, data in enumerate(dict.fromkeys(contents)):
        what = "of the file" if i == 0 else "of the decompressed content"
        out[hashlib.md5(data).hexdigest()] = f"md5 {what}"
        out[hashlib.sha256(data).hexdigest()] = f"sha256 {what}"
    return out


def check_digests(name: str, found: dict[str, str], known: Iterable[str], fix: str) -> None:
    """Raise :class:`ChecksumError` unless one digest in ``found`` is among ``known``.

    ``found`` maps hex digests to what they are of (see :func:`digests`); ``name`` and ``fix``
    make the message.
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
