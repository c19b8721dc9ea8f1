"""Finding and reading data files: where ``data_dir`` is, images as 8-bit grey, and any failure
to read a file becomes one ``DataFileError`` naming the file and the fix."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

# PIL modes whose conversion to 8-bit grey ("L") is exact up to the usual luma weights.
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")

# What a damaged, truncated or mis-named file raises while it is decompressed or decoded:
# gzip.BadGzipFile and PIL's UnidentifiedImageError are OSErrors; a truncated gzip stream is an
# EOFError; a non-zip .npz a BadZipFile; a truncated PNG or a malformed text file a ValueError.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile, UnicodeDecodeError)


ENV_VAR = "VHP_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$VHP_DATA_DIR`` if set and non-empty, else ``./data``."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or "data"
    return Path(data_dir).expanduser()


class DataFileError(ValueError):
    """A data file could not be read: the message names the file, what went wrong, the fix."""


@contextmanager
def reading(path: str | Path, fix: str) -> Iterator[None]:
    """Turn an error raised while reading ``path`` into a ``DataFileError`` with ``fix``.

    Errors that already name the file (``DataFileError``, ``ChecksumError``, our shape checks)
    pass unchanged.
    """
    try:
        yield
    except DataFileError:
        raise
    except FileNotFoundError:
        raise
    except _READ_ERRORS as err:
        if isinstance(err, ValueError) and str(path) in str(err):  # our own checks (shapes,
            # checksums) already name the file and the fix
            raise
        raise DataFileError(
            f"cannot read {path}: {type(err).__name__}: {err}. The file is damaged, truncated or "
            f"not what its name says: {fix}"
        ) from err


def read_grey(path: Path, fix: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The image file ``path`` as 8-bit grey ``(H, W) uint8`` (PIL's ``convert("L")``: ITU-R
    601-2 luma), resized to ``size = (H, W)`` with PIL's antialiased bilinear filter when given.

    Raises:
        DataFileError: the file cannot be decoded (names it and ``fix``).
        ValueError: 16-bit or float pixels, which the conversion to 8 bits would clip.
    """
    with reading(path, fix), Image.open(path) as im:
        if im.mode not in _EIGHT_BIT_MODES:  # e.g. 16-bit or float: "L" would clip silently
            raise ValueError(
                f"{path} has pixel mode {im.mode!r}; expected 8-bit grey, colour or palette "
                f"images ({', '.join(_EIGHT_BIT_MODES)}): convert it to 8 bits"
            )
        grey = im.convert("L")
        if size is not None and grey.size != (size[1], size[0]):
            grey = grey.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.uint8)
