"""Reading data files: any failure becomes one ``DataFileError`` naming the file and the fix."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What a damaged, truncated or mis-named file raises while it is decompressed or decoded:
# gzip.BadGzipFile and PIL's UnidentifiedImageError are OSErrors; a truncated gzip stream is an
# EOFError; a non-zip .npz a BadZipFile; a truncated PNG or a malformed text file a ValueError.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile, UnicodeDecodeError)


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
